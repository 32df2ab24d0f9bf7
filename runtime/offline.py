"""The offline promise: switch every Hugging Face library to local-only before it is imported.

huggingface_hub reads these variables once, at import, so this must run before anything imports
diffusers, transformers or huggingface_hub (main.py, the PyInstaller runtime hook, the tests).
"""

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1",
    # bitsandbytes tries a hub download at import when the `kernels` package is present.
    "BNB_DISABLE_KERNELS_HUB": "1",
}


def enforce_offline() -> None:
    """Set the offline switches for this process and its children."""
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value
