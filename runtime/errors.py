"""Errors a user can meet. Each says what happened and what to do about it."""

from pathlib import Path


class LineaError(Exception):
    """Base of every error the runtime reports to a person. `hint` says what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class ModelFolderError(LineaError):
    """The folder is not a usable model: not diffusers layout, component missing, bad config."""

    exit_code = 3


class UnsafeWeightsError(ModelFolderError):
    """The folder holds pickle checkpoints, which Linea never loads."""


class CorruptWeightsError(ModelFolderError):
    """A safetensors file is truncated, corrupt, or its tensors do not fit the config."""


class RequestError(LineaError, ValueError):
    """A generation setting is out of range (size, steps, prompt, ...)."""

    exit_code = 2


class OutputPathError(LineaError):
    """The output file exists already or cannot be written."""

    exit_code = 4


class NaNResultError(LineaError):
    """The model produced NaN or infinite values."""

    exit_code = 5


class OutOfMemoryError(LineaError):
    """No memory plan fitted on this device."""

    exit_code = 6


class CancelledError(LineaError):
    """The user cancelled the generation."""

    exit_code = 130


def describe_path(path: Path | str) -> str:
    return f"'{Path(path)}'"
