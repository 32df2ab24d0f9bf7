"""Light and dark palettes on Qt's Fusion style, or the system's choice."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

STYLE = """
QLabel#banner { background: #b3261e; color: white; padding: 8px; border-radius: 4px; }
QLabel#banner[warning="true"] { background: #8a5a00; }
QLabel#placeholder { color: %(muted)s; font-size: 14pt; }
QLabel#note { color: %(muted)s; }
QLabel#heading { font-weight: bold; padding: 4px 0; }
"""
# Fusion draws check-box frames a shade darker than the window: invisible on a dark one.
DARK_STYLE = """
QCheckBox::indicator, QGroupBox::indicator { width: 13px; height: 13px; border-radius: 2px;
    border: 1px solid #9aa0a6; background: #17181a; }
QCheckBox::indicator:checked, QGroupBox::indicator:checked { background: #8ab4f8;
    border-color: #8ab4f8; }
QCheckBox::indicator:disabled { border-color: #5f6368; }
"""


def _dark_palette() -> QPalette:
    palette = QPalette()
    colours = {
        QPalette.ColorRole.Window: "#202124", QPalette.ColorRole.WindowText: "#e8eaed",
        QPalette.ColorRole.Base: "#17181a", QPalette.ColorRole.AlternateBase: "#2a2b2e",
        QPalette.ColorRole.Text: "#e8eaed", QPalette.ColorRole.Button: "#2d2e31",
        QPalette.ColorRole.ButtonText: "#e8eaed", QPalette.ColorRole.Highlight: "#8ab4f8",
        QPalette.ColorRole.HighlightedText: "#202124", QPalette.ColorRole.ToolTipBase: "#2d2e31",
        QPalette.ColorRole.ToolTipText: "#e8eaed", QPalette.ColorRole.PlaceholderText: "#9aa0a6",
        QPalette.ColorRole.Mid: "#9aa0a6", QPalette.ColorRole.Link: "#8ab4f8",
    }
    for role, colour in colours.items():
        palette.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText,
                 QPalette.ColorRole.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6b6f75"))
    return palette


def system_prefers_dark() -> bool:
    hints = QGuiApplication.styleHints()
    return hasattr(hints, "colorScheme") and hints.colorScheme() == Qt.ColorScheme.Dark


def apply_theme(app: QApplication, theme: str) -> None:
    app.setStyle("Fusion")
    dark = theme == "dark" or (theme == "system" and system_prefers_dark())
    app.setPalette(_dark_palette() if dark else app.style().standardPalette())
    # Muted text still needs 4.5:1 contrast on the window colour in both themes.
    style = STYLE % {"muted": "#9aa0a6" if dark else "#5f6368"}
    app.setStyleSheet(style + DARK_STYLE if dark else style)
