"""What the runtime tells its caller while it works, and how the caller cancels it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image


class EventKind(StrEnum):
    LOADING = "loading"
    ENCODING = "encoding"
    STEP = "step"
    DECODING = "decoding"
    PLAN = "plan"
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    message: str = ""
    step: int = 0
    total: int = 0
    image_index: int = 0
    preview: Image.Image | None = None
    result: Any = None
    error: Exception | None = None


EventHandler = Callable[[Event], None]


def ignore_events(_event: Event) -> None:
    return None


class CancelToken:
    """Set from any thread; the runtime checks it before every step and phase."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()
