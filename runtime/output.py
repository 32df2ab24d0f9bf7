"""PNG files with their recipe inside: A1111 `parameters`, Linea's JSON, and the IPTC AI tag.

Files are written to a temporary name in the target folder and linked into place, so a reader
never sees a half-written image and an existing file is never replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from models.families import FULL_INTERVAL
from runtime.errors import OutputPathError, RequestError
from runtime.request import GenerationRequest

LINEA_KEY = "linea"
PARAMETERS_KEY = "parameters"
XMP_KEY = "XML:com.adobe.xmp"
AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
FORMAT_VERSION = 1

XMP_TEMPLATE = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    Iptc4xmpExt:DigitalSourceType="{source}"
    xmp:CreatorTool="Linea {version}"/>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def a1111_parameters(record: dict[str, Any]) -> str:
    """The `parameters` text most tools read: prompt, negative prompt, then key: value pairs."""
    lines = [record["prompt"]]
    if record.get("negative_prompt"):
        lines.append(f"Negative prompt: {record['negative_prompt']}")
    pairs = [
        ("Steps", record["steps"]), ("Sampler", record["sampler_label"]),
        ("CFG scale", record["guidance_scale"]), ("Seed", record["seed"]),
        ("Size", f"{record['width']}x{record['height']}"), ("Model", record["model"]),
        ("Version", f"Linea {record['version']}"),
    ]
    low, high = record.get("guidance_interval") or FULL_INTERVAL
    if (low, high) != FULL_INTERVAL:
        # The scale alone would read as guidance at every step; say at which noise levels.
        pairs.insert(3, ("Guidance interval", f"{low:g}-{high:g}"))
    if record.get("contrast_prompt"):
        # Said so the steps at those noise levels are not read as plain conditional ones.
        low, high = record["contrast_interval"]
        pairs.insert(-2, ("Contrast guidance", f"{record['contrast_scale']:g} at {low:g}-{high:g}"))
    if record.get("candidates", 1) > 1:
        # The seed alone would remake the first candidate elsewhere; say the judge picked.
        pairs.insert(-2, ("Best of", f"{record['candidates']} (prompt judge kept candidate "
                                     f"{record['chosen_candidate'] + 1})"))
    lines.append(", ".join(f"{key}: {value}" for key, value in pairs))
    return "\n".join(lines)


def build_pnginfo(record: dict[str, Any]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, a1111_parameters(record))
    info.add_itxt(LINEA_KEY, json.dumps(record, ensure_ascii=False, sort_keys=True))
    info.add_itxt(XMP_KEY, XMP_TEMPLATE.format(source=AI_SOURCE_TYPE, version=record["version"]))
    return info


def check_writable(path: Path) -> None:
    """Fail before any work is done if `path` cannot become a new file."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise OutputPathError(f"The output file '{path}' does not end in .png.",
                              "Give a file name ending in .png.")
    if path.exists():
        raise OutputPathError(f"'{path}' exists already; Linea never overwrites a file.",
                              "Choose another file name, or move the old file away.")
    check_folder_writable(path.parent if str(path.parent) else Path("."))


def check_folder_writable(folder: Path) -> None:
    """Fail if no new file can be made in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputPathError(f"The folder '{folder}' does not exist.",
                              "Create it first, or choose another folder.")
    try:  # permissions alone do not tell (read-only disks, special folders, administrators)
        handle, probe = tempfile.mkstemp(prefix=".linea-probe-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputPathError(f"The folder '{folder}' cannot be written to "
                              f"({exc.strerror or exc}).",
                              "Choose a folder you can write to.") from exc
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def save_png(image: Image.Image, path: Path, record: dict[str, Any]) -> Path:
    """Write `image` with its metadata to a new file at `path`, atomically."""
    path = Path(path)
    check_writable(path)
    try:
        handle, temp_name = tempfile.mkstemp(prefix=".linea-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputPathError(f"Saving '{path}' failed: {exc.strerror or exc}.",
                              "Choose a folder you can write to.") from exc
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as fh:
            image.save(fh, format="PNG", pnginfo=build_pnginfo(record))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temp, path)
        except FileExistsError as exc:
            raise OutputPathError(f"'{path}' appeared while saving; it was left untouched.",
                                  "Choose another file name.") from exc
        except OSError:
            if path.exists():
                raise OutputPathError(f"'{path}' exists already.",
                                      "Choose another file name.") from None
            os.replace(temp, path)
    except OSError as exc:
        raise OutputPathError(f"Saving '{path}' failed: {exc.strerror or exc}.",
                              "Check free disk space and permissions.") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return path


def numbered_paths(path: Path, count: int) -> list[Path]:
    """`out.png` for one image; `out-1.png` ... `out-N.png` for several."""
    path = Path(path)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{k}{path.suffix}") for k in range(1, count + 1)]


def next_free_path(folder: Path, stem: str) -> Path:
    """A new file name in `folder`, `stem-00001.png` upwards."""
    folder.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(stem) + r"-(\d+)\.png$")
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return folder / f"{stem}-{max(numbers, default=0) + 1:05d}.png"


_A1111_PAIR = re.compile(r"\s*([\w ]+):\s*([^,]+)")


def parse_a1111(text: str) -> dict[str, Any]:
    """Read a `parameters` text written by Linea or another tool into request fields."""
    lines = text.strip().split("\n")
    settings_line = lines.pop() if lines and "Steps:" in lines[-1] else ""
    negative = ""
    prompt_lines = []
    for line in lines:
        if line.startswith("Negative prompt:"):
            negative = line.removeprefix("Negative prompt:").strip()
        else:
            prompt_lines.append(line)
    fields: dict[str, Any] = {"prompt": "\n".join(prompt_lines).strip(),
                              "negative_prompt": negative}
    pairs = {k.strip(): v.strip() for k, v in _A1111_PAIR.findall(settings_line)}
    with contextlib.suppress(ValueError, KeyError):
        fields["steps"] = int(pairs["Steps"])
    with contextlib.suppress(ValueError, KeyError):
        fields["guidance_scale"] = float(pairs["CFG scale"])
    with contextlib.suppress(ValueError, KeyError):
        fields["seed"] = int(pairs["Seed"])
    with contextlib.suppress(ValueError, KeyError):
        width, height = pairs["Size"].lower().split("x")
        fields["width"], fields["height"] = int(width), int(height)
    return fields


def read_request(path: Path) -> GenerationRequest:
    """The request stored in a PNG made by Linea, or one carrying A1111 `parameters`."""
    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}) or {})
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(f"'{path}' is not a readable PNG image.",
                           "Drop a PNG made by Linea or another image generator.") from exc
    if LINEA_KEY in text:
        try:
            record = json.loads(text[LINEA_KEY])
            return GenerationRequest.from_dict(record["request"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RequestError(f"The Linea settings stored in '{path}' are damaged.",
                               "Use another image.") from exc
    if PARAMETERS_KEY in text:
        return GenerationRequest.from_dict(parse_a1111(text[PARAMETERS_KEY]))
    raise RequestError(f"'{path}' carries no generation settings.",
                       "Drop a PNG made by Linea, or one with A1111 'parameters'.")
