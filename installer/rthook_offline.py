"""PyInstaller runtime hook: runs in the frozen app before main.py imports anything.

The offline switches are runtime.offline.OFFLINE_ENV (tests/test_installer.py checks they stay
equal). Importing that module here would import the runtime package, and torch with it, before
the switches are set, so the values are written out.
"""

import os
import sys

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1",
    "BNB_DISABLE_KERNELS_HUB": "1",
}
os.environ.update(OFFLINE_ENV)

# The desktop launcher has no console, so Python leaves sys.stdout and sys.stderr as None, and a
# library writing a progress bar or a warning there would crash the app.
if sys.stdout is None:
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (lives as long as the app)
if sys.stderr is None:
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
