"""Starting the desktop app: logging to the user log folder, the theme, the window."""

from __future__ import annotations

import logging
import sys
from logging.handlers import RotatingFileHandler

from runtime.paths import user_log_dir


def setup_logging() -> logging.Handler:
    """Log to a rotating file in the user log folder (Help > Open log file shows it)."""
    folder = user_log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(folder / "linea.log", maxBytes=2_000_000, backupCount=3,
                                  encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _log_uncaught(kind, value, trace) -> None:
    """An exception escaping a slot on the UI thread is logged; Qt carries on."""
    logging.getLogger("linea").error("uncaught error", exc_info=(kind, value, trace))


def run_app(argv: list[str]) -> int:
    if sys.platform == "win32":
        import torch  # noqa: F401  (before Qt, or c10.dll fails to load: WinError 1114)
    from PySide6.QtCore import QEvent
    from PySide6.QtWidgets import QApplication

    from app.viewmodels.settings import Settings
    from app.widgets.theme import apply_theme
    from app.widgets.window import MainWindow

    setup_logging()
    sys.excepthook = _log_uncaught
    app = QApplication.instance() or QApplication([sys.argv[0], *argv])
    app.setApplicationName("Linea")
    settings = Settings.load()
    apply_theme(app, settings.theme)
    window = MainWindow(settings)
    window.show()
    logging.getLogger(__name__).info("window shown")
    code = app.exec()
    # Delete the window (and its threads' owners) while Qt still runs, not during the
    # interpreter's shutdown, where Qt objects would die in no particular order.
    window.close()
    window.deleteLater()
    del window
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    return code
