"""The About box's text: versions read from package metadata, so nothing heavy is imported."""

from __future__ import annotations

from importlib import metadata

from runtime import __version__

PACKAGES = ("PySide6-Essentials", "torch", "diffusers", "transformers", "bitsandbytes",
            "safetensors", "Pillow")


def about_text() -> str:
    import PySide6.QtCore

    lines = [f"Linea {__version__}", "Offline text-to-image studio: nothing is downloaded.", "",
             f"Qt {PySide6.QtCore.qVersion()}"]
    for package in PACKAGES:
        try:
            lines.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{package}: not installed")
    return "\n".join(lines)
