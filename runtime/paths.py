"""Where Linea keeps things: bundled assets beside the program, user data in platformdirs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "Linea"


def program_dir() -> Path:
    """The folder holding assets/: the repository, or the PyInstaller bundle when frozen."""
    if getattr(sys, "frozen", False):
        return Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent))
    return Path(__file__).resolve().parent.parent


def assets_dir() -> Path:
    return program_dir() / "assets"


def bundled_models_dir() -> Path:
    return assets_dir() / "models"


def user_data_dir() -> Path:
    override = os.environ.get("LINEA_DATA_DIR")
    if override:
        return Path(override)
    import platformdirs

    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def user_models_dir() -> Path:
    return user_data_dir() / "models"


def user_log_dir() -> Path:
    override = os.environ.get("LINEA_DATA_DIR")
    if override:
        return Path(override) / "logs"
    import platformdirs

    return platformdirs.user_log_path(APP_NAME, appauthor=False)


def default_output_dir() -> Path:
    override = os.environ.get("LINEA_DATA_DIR")
    if override:
        return Path(override) / "images"
    import platformdirs

    return platformdirs.user_pictures_path() / APP_NAME
