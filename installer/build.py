"""Build Linea for Windows (or the host OS): one command per target.

    python installer/build.py --target cpu|cuda [--skip-installer] [--vcredist vc_redist.x64.exe]

1. checks that the installed torch matches the target (CUDA torch comes from PyTorch's index);
2. freezes the app with PyInstaller (installer/linea.spec) into dist/<target>/Linea/;
3. checks the bundle against the target's size budget and Windows' path limit;
4. runs the frozen app's `--smoke-test` offline, with no Hugging Face variables set;
5. unless --skip-installer, writes dist/<target>/installer/: the NSIS installer, and for a build
   over 1.8 GB its payload archives and their SHA-256 manifest (see installer/README.md).
A report of sizes and times goes to dist/<target>/build-report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from installer import bundle, package  # noqa: E402
from runtime.offline import OFFLINE_ENV  # noqa: E402

GIB = 2**30
# The program without its models (assets/models/ is reported apart): a CPU build is torch's CPU
# libraries, Qt and Python; a CUDA build adds cuDNN, cuBLAS and torch_cuda (about 4.5 GB).
SIZE_BUDGET = {"cpu": int(1.5 * GIB), "cuda": int(6.0 * GIB)}
TORCH_INDEX = {"cpu": "https://download.pytorch.org/whl/cpu",
               "cuda": "https://download.pytorch.org/whl/cu128"}
SMOKE_TIMEOUT_S = 900


class BuildError(RuntimeError):
    """A build step failed; the message says which and what to do."""


def check_torch(target: str) -> str:
    import torch

    cuda = torch.version.cuda
    if target == "cuda" and not cuda:
        raise BuildError(f"torch {torch.__version__} has no CUDA support, so a CUDA build would "
                         "run on the CPU only. Install torch from PyTorch's CUDA index: pip "
                         f"install torch=={torch.__version__.split('+')[0]} --index-url "
                         f"{TORCH_INDEX['cuda']}")
    if target == "cpu" and cuda:
        raise BuildError(f"torch {torch.__version__} is a CUDA build; the CPU target would carry "
                         "gigabytes of unused GPU libraries. Use a separate environment with "
                         f"torch from {TORCH_INDEX['cpu']}.")
    return torch.__version__


def run_pyinstaller(target: str, models: Path | None, dist: Path, work: Path) -> Path:
    env = dict(os.environ)
    if models is not None:
        env[bundle.MODELS_OVERRIDE_ENV] = str(models.resolve())
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level",
               "WARN", "--distpath", str(dist), "--workpath", str(work),
               str(ROOT / "installer" / "linea.spec")]
    if subprocess.run(command, cwd=ROOT, env=env, check=False).returncode != 0:
        raise BuildError("PyInstaller failed; its messages are above.")
    return dist / bundle.APP_NAME


def check_bundle(folder: Path, target: str) -> dict[str, object]:
    models = bundle.bundled_models(folder)
    models_size = package.folder_size(models) if models.is_dir() else 0
    program_size = package.folder_size(folder) - models_size
    if program_size > SIZE_BUDGET[target]:
        raise BuildError(f"The {target} bundle is {program_size / GIB:.2f} GiB without models, "
                         f"over its budget of {SIZE_BUDGET[target] / GIB:.1f} GiB. Look for "
                         "newly collected packages in the PyInstaller warnings.")
    for name in bundle.EXCLUDED_MODULES:
        if "." not in name and (bundle.internal_dir(folder) / name).exists():
            raise BuildError(f"'{name}' ended up in the bundle although the spec excludes it.")
    depth, deepest = bundle.longest_relative_path(folder)
    return {"program_bytes": program_size, "models_bytes": models_size,
            "longest_path": depth, "deepest_file": deepest}


def smoke_test(folder: Path) -> dict[str, object]:
    """Run the frozen app as a user would: no Hugging Face variables, a fresh data folder."""
    launcher = folder / (bundle.CLI_NAME + (".exe" if os.name == "nt" else ""))
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV}
    with tempfile.TemporaryDirectory(prefix="linea-smoke-") as scratch:
        env.update(LINEA_DATA_DIR=str(Path(scratch) / "data"), HF_HOME=str(Path(scratch) / "hf"),
                   QT_QPA_PLATFORM="offscreen")
        start = time.perf_counter()
        try:
            done = subprocess.run([str(launcher), "--smoke-test"], env=env, capture_output=True,
                                  text=True, timeout=SMOKE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"The smoke test did not finish in {SMOKE_TIMEOUT_S} s.") from exc
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise BuildError(f"The frozen app's smoke test failed ({done.returncode}):\n"
                         f"{done.stdout}{done.stderr}")
    return {"smoke_test_s": round(seconds, 2), "smoke_test_output": done.stdout.strip()}


def app_version() -> str:
    for line in (ROOT / "runtime" / "__init__.py").read_text(encoding="utf-8").splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise BuildError("runtime/__init__.py has no __version__.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python installer/build.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("cpu", "cuda"), required=True)
    parser.add_argument("--skip-installer", action="store_true",
                        help="stop after the bundle and its smoke test")
    parser.add_argument("--skip-smoke-test", action="store_true",
                        help="do not run the frozen app (cross-checks only)")
    parser.add_argument("--models", type=Path, default=None,
                        help="bundle the model folders in this folder instead of assets/models")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist",
                        help="output folder (default dist/); PyInstaller works in build/")
    parser.add_argument("--vcredist", type=Path, default=None,
                        help="vc_redist.x64.exe to carry inside the installer")
    parser.add_argument("--payload", choices=("auto", "embed", "split"), default="auto",
                        help="auto: split off large files only when over NSIS's 2 GB limit")
    parser.add_argument("--compressor", choices=("lzma", "zlib"), default="lzma",
                        help="installer compression; zlib builds faster, lzma is smaller")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        report: dict[str, object] = {"target": args.target, "version": app_version(),
                                     "torch": check_torch(args.target)}
        start = time.perf_counter()
        dist = args.dist.resolve() / args.target
        folder = run_pyinstaller(args.target, args.models, dist, ROOT / "build" / args.target)
        report["pyinstaller_s"] = round(time.perf_counter() - start, 1)
        report.update(check_bundle(folder, args.target))
        if not args.skip_smoke_test:
            report.update(smoke_test(folder))
        if not args.skip_installer:
            split = {"auto": None, "embed": False, "split": True}[args.payload]
            files = package.make_installer(
                folder, folder.parent / "installer", str(report["version"]), args.target,
                split=split, vcredist=args.vcredist, icon=bundle.ICON,
                compressor=args.compressor)
            report["installer_files"] = {f.name: f.stat().st_size for f in files}
    except (BuildError, package.PackagingError) as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    report_path = dist / "build-report.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
