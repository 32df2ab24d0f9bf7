"""Turn a onedir bundle into a Windows installer, splitting off a payload when it is too large.

An NSIS installer cannot exceed 2 GB, and a CUDA build of Linea is several. So files of at least
PAYLOAD_FILE_MIN (GPU libraries, model weights) can ship as zip archives beside the installer,
listed with their SHA-256 in a manifest the installer carries; the installer checks every archive
and unpacks it into the install folder (installer/payload.ps1). A build small enough is one file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

NSIS_SCRIPT = Path(__file__).resolve().parent / "linea.nsi"
GIB = 2**30
# Under NSIS's 2 GB with room for the installer itself and compression overhead.
EMBED_LIMIT = int(1.8 * GIB)
# GitHub release assets and FAT32 sticks stop at 2 GiB / 4 GiB per file.
ARCHIVE_LIMIT = int(1.9 * GIB)
PAYLOAD_FILE_MIN = 32 * 2**20
WINDOWS_MAX_PATH = 259  # MAX_PATH (260) less the terminating NUL
NSIS_LOCATIONS = ("makensis", r"C:\Program Files (x86)\NSIS\makensis.exe",
                  r"C:\Program Files\NSIS\makensis.exe")


class PackagingError(RuntimeError):
    """The bundle cannot be made into an installer; the message says why and what to do."""


@dataclass(frozen=True)
class Payload:
    archives: tuple[Path, ...]
    manifest: Path
    files: int
    size: int


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def payload_files(bundle: Path, min_size: int = PAYLOAD_FILE_MIN) -> list[Path]:
    """The bundle's large files, relative to it, largest first."""
    found = [p for p in bundle.rglob("*") if p.is_file() and p.stat().st_size >= min_size]
    found.sort(key=lambda p: (-p.stat().st_size, str(p)))
    return [p.relative_to(bundle) for p in found]


def group_archives(bundle: Path, files: list[Path], limit: int = ARCHIVE_LIMIT) -> list[list[Path]]:
    """First-fit groups of files whose total size stays under `limit` (a larger file goes alone)."""
    groups: list[tuple[int, list[Path]]] = []
    for relative in files:
        size = (bundle / relative).stat().st_size
        for index, (used, members) in enumerate(groups):
            if used + size <= limit:
                groups[index] = (used + size, [*members, relative])
                break
        else:
            groups.append((size, [relative]))
    return [members for _, members in groups]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_payload(bundle: Path, files: list[Path], out_dir: Path, stem: str,
                  limit: int = ARCHIVE_LIMIT) -> Payload:
    """Zip `files` (relative to `bundle`) into `stem`-payload-N.zip plus `stem`-payload.sha256."""
    archives = []
    for number, members in enumerate(group_archives(bundle, files, limit), start=1):
        archive = out_dir / f"{stem}-payload-{number}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for relative in members:
                name = relative.as_posix()
                if not name.isascii():
                    raise PackagingError(f"The bundle file '{name}' has a non-ASCII name, which "
                                         "zip tools disagree on. Rename it or leave it out.")
                zf.write(bundle / relative, name)
        archives.append(archive)
    manifest = out_dir / f"{stem}-payload.sha256"
    manifest.write_text("".join(f"{sha256(a)}  {a.name}\n" for a in archives), encoding="ascii")
    return Payload(tuple(archives), manifest, len(files),
                   sum((bundle / f).stat().st_size for f in files))


def stage_program(bundle: Path, staged: Path, leave_out: list[Path]) -> None:
    """A copy of the bundle without the payload files, hard-linked where the disk allows."""
    if staged.exists():
        shutil.rmtree(staged)
    skipped = {str(p) for p in leave_out}

    def link_or_copy(source: str, target: str) -> None:
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    def ignore(folder: str, names: list[str]) -> set[str]:
        base = Path(folder).relative_to(bundle)
        return {n for n in names if str(base / n) in skipped}

    shutil.copytree(bundle, staged, copy_function=link_or_copy, ignore=ignore)


def find_makensis() -> str:
    for candidate in NSIS_LOCATIONS:
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    raise PackagingError("makensis was not found. Install NSIS 3 (Debian/Ubuntu: "
                         "apt-get install nsis; Windows: choco install nsis), or pass "
                         "--skip-installer.")


def version_quad(version: str) -> str:
    numbers = [int(part) for part in version.split(".") if part.isdigit()][:4]
    return ".".join(str(n) for n in numbers + [0] * (4 - len(numbers)))


def make_installer(bundle: Path, out_dir: Path, version: str, target: str, *,
                   split: bool | None = None, vcredist: Path | None = None,
                   icon: Path | None = None, compressor: str = "lzma",
                   payload_min: int = PAYLOAD_FILE_MIN,
                   archive_limit: int = ARCHIVE_LIMIT) -> list[Path]:
    """Write the installer (and payload archives when split) into `out_dir`; return the files.

    `split` None decides by size: one file when the bundle fits under EMBED_LIMIT.
    """
    from installer.bundle import longest_relative_path

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"Linea-{version}-{target}"
    total = folder_size(bundle)
    if split is None:
        split = total > EMBED_LIMIT
    depth, deepest = longest_relative_path(bundle)
    max_instdir = WINDOWS_MAX_PATH - 1 - depth
    if max_instdir < 60:
        raise PackagingError(f"'{deepest}' is {depth} characters deep inside the bundle, leaving "
                             "too little room for an install folder under Windows' 260-character "
                             "limit. Leave that file out of the bundle.")
    defines = {
        "APP_VERSION": version, "VI_VERSION": version_quad(version), "TARGET": target,
        "OUT_FILE": str(out_dir / f"{stem}-setup.exe"), "INSTALL_SIZE_KB": str(total // 1024),
        "MAX_INSTDIR_LENGTH": str(max_instdir), "COMPRESSOR": compressor,
    }
    written = []
    staged = out_dir / f"{stem}-program"
    leave_out = payload_files(bundle, payload_min) if split else []
    stage_program(bundle, staged, leave_out)
    if leave_out:
        payload = write_payload(bundle, leave_out, out_dir, stem, archive_limit)
        defines["PAYLOAD_MANIFEST"] = str(payload.manifest)
        written += [*payload.archives, payload.manifest]
    if folder_size(staged) > EMBED_LIMIT:
        raise PackagingError(f"The program part is {folder_size(staged) / GIB:.2f} GiB, over "
                             "NSIS's limit. Lower the payload file size threshold.")
    defines["PROGRAM_DIR"] = str(staged)
    if vcredist is not None:
        if not vcredist.is_file():
            raise PackagingError(f"'{vcredist}' does not exist. Download vc_redist.x64.exe from "
                                 "https://aka.ms/vs/17/release/vc_redist.x64.exe.")
        defines["VCREDIST"] = str(vcredist.resolve())
    if icon is not None and icon.is_file():
        defines["ICON"] = str(icon)
    command = [find_makensis(), "-V2", "-WX", *(f"-D{k}={v}" for k, v in defines.items()),
               str(NSIS_SCRIPT)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PackagingError(f"makensis failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    shutil.rmtree(staged)
    return [Path(defines["OUT_FILE"]), *written]
