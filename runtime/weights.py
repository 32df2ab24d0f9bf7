"""Weight files: safetensors only, checked before anything is loaded.

A safetensors file is an 8-byte header length, a JSON header naming every tensor with its dtype,
shape and byte range, then the data. Reading the header alone is enough to find truncated or
corrupt files and shape mismatches, without touching the data.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import CorruptWeightsError, UnsafeWeightsError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and verify a safetensors header; raise CorruptWeightsError naming the file."""
    size = path.stat().st_size
    hint = "The download or copy is incomplete: copy the model folder again."
    if size < 8:
        raise CorruptWeightsError(f"'{path}' is too short to be a safetensors file.", hint)
    with path.open("rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
            raise CorruptWeightsError(f"'{path}' has a damaged safetensors header.", hint)
        raw = fh.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptWeightsError(f"'{path}' has an unreadable safetensors header.", hint) from exc
    if not isinstance(header, dict):
        raise CorruptWeightsError(f"'{path}' has an unreadable safetensors header.", hint)
    tensors: dict[str, TensorInfo] = {}
    data_size = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = entry["dtype"], tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptWeightsError(f"'{path}': tensor '{name}' has a damaged entry.",
                                      hint) from exc
        expected = math.prod(shape) * DTYPE_BYTES.get(dtype, 0)
        if end > data_size:
            raise CorruptWeightsError(
                f"'{path}' is truncated: tensor '{name}' ends at byte {end} of the data, "
                f"but the file holds only {data_size} bytes of data.", hint)
        if DTYPE_BYTES.get(dtype) and end - begin != expected:
            raise CorruptWeightsError(f"'{path}': tensor '{name}' has the wrong byte length.", hint)
        tensors[name] = TensorInfo(dtype, shape)
    return tensors


def component_weight_files(folder: Path) -> list[Path]:
    """The safetensors files of one component folder; refuse pickle-only components."""
    safetensors = sorted(folder.glob("*.safetensors"))
    pickles = sorted(p for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles and not safetensors:
        raise UnsafeWeightsError(
            f"'{pickles[0]}' is a pickle checkpoint, which can run code when loaded; Linea "
            "loads safetensors files only.",
            "Convert the model to safetensors on a trusted machine "
            "(save_pretrained(..., safe_serialization=True)) and try again.",
        )
    return safetensors


def read_component_tensors(folder: Path) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    for path in component_weight_files(folder):
        tensors.update(read_header(path))
    return tensors


def dominant_dtype(tensors: dict[str, TensorInfo]) -> str:
    """The dtype most parameters are stored in ("F16", "BF16", "F32", ...)."""
    totals: dict[str, int] = {}
    for info in tensors.values():
        totals[info.dtype] = totals.get(info.dtype, 0) + math.prod(info.shape)
    return max(totals, key=lambda k: totals[k]) if totals else "F32"


def parameter_count(tensors: dict[str, TensorInfo]) -> int:
    return sum(math.prod(info.shape) for info in tensors.values())


def check_shapes(component: str, folder: Path, expected: dict[str, tuple[int, ...]],
                 found: dict[str, TensorInfo]) -> None:
    """Compare the tensors a config implies with the ones on disk."""
    hint = ("The weights do not belong to this config: make sure config.json and the "
            ".safetensors files come from the same model.")
    for name, shape in expected.items():
        info = found.get(name)
        if info is None:
            raise CorruptWeightsError(
                f"The {component} weights in '{folder}' lack the tensor '{name}'.", hint)
        if info.shape != shape:
            raise CorruptWeightsError(
                f"The {component} tensor '{name}' in '{folder}' has shape {list(info.shape)}, "
                f"but its config.json needs {list(shape)}.", hint)
