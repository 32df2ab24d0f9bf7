"""Linea's runtime: load a SANA-family model folder and turn requests into images, offline.

The public API is what this module exports; the GUI and the command line use nothing else.
"""

from runtime.catalog import (
    CatalogProblem,
    ModelInfo,
    default_model,
    find_models,
    identify,
    resolve_model,
)
from runtime.device import DeviceInfo, MemoryPlan, detect_device, fits
from runtime.errors import (
    CancelledError,
    CorruptWeightsError,
    LineaError,
    ModelFolderError,
    NaNResultError,
    OutOfMemoryError,
    OutputPathError,
    RequestError,
    UnsafeWeightsError,
)
from runtime.events import CancelToken, Event, EventHandler, EventKind
from runtime.images import ImageInputError, load_image
from runtime.output import (
    check_folder_writable,
    next_free_path,
    numbered_paths,
    read_request,
    save_png,
)
from runtime.request import (
    ASPECT_PRESETS_1024,
    MAX_CANDIDATES,
    GenerationRequest,
    Sampler,
    aspect_presets,
    random_seed,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # The engine pulls in torch (seconds); a window can open before anything needs it.
    if name in ("Engine", "GenerationResult"):
        from runtime import engine

        return getattr(engine, name)
    if name in ("auto_control", "PHOTO_NOTE"):
        from runtime import sketch

        return getattr(sketch, name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")


__all__ = [
    "ASPECT_PRESETS_1024",
    "MAX_CANDIDATES",
    "PHOTO_NOTE",
    "CancelToken",
    "CancelledError",
    "CatalogProblem",
    "CorruptWeightsError",
    "DeviceInfo",
    "Engine",
    "Event",
    "EventHandler",
    "EventKind",
    "GenerationRequest",
    "GenerationResult",
    "ImageInputError",
    "LineaError",
    "MemoryPlan",
    "ModelFolderError",
    "ModelInfo",
    "NaNResultError",
    "OutOfMemoryError",
    "OutputPathError",
    "RequestError",
    "Sampler",
    "UnsafeWeightsError",
    "aspect_presets",
    "auto_control",
    "check_folder_writable",
    "default_model",
    "detect_device",
    "find_models",
    "fits",
    "identify",
    "load_image",
    "next_free_path",
    "numbered_paths",
    "random_seed",
    "read_request",
    "resolve_model",
    "save_png",
]
