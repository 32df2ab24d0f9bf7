"""The packaged install: runtime hook, spec, payload split, NSIS script, smoke test.

The fast tests run by default (makensis ones only where makensis is installed). The full build
(PyInstaller, frozen smoke test, installer) takes minutes and is marked `installer`:
    python -m pytest -m installer tests/test_installer.py
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

from installer import bundle, package
from runtime import __version__
from runtime.offline import OFFLINE_ENV

ROOT = Path(__file__).resolve().parent.parent
needs_makensis = pytest.mark.skipif(shutil.which("makensis") is None,
                                    reason="makensis (NSIS) is not installed")


# ----- runtime hook ------------------------------------------------------------------------------

def test_runtime_hook_sets_the_offline_switches(monkeypatch):
    for key in OFFLINE_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(sys, "stderr", None)
    namespace = runpy.run_path(str(bundle.RUNTIME_HOOK))
    assert namespace["OFFLINE_ENV"] == OFFLINE_ENV
    assert {key: os.environ.get(key) for key in OFFLINE_ENV} == OFFLINE_ENV
    # A windowed launcher has no stderr; the hook gives it one so writes cannot crash the app.
    assert sys.stderr is not None
    sys.stderr.write("written nowhere")


# ----- spec --------------------------------------------------------------------------------------

class _Recorder:
    def __init__(self, calls: list, kind: str) -> None:
        self.calls, self.kind = calls, kind

    def __call__(self, *args, **kwargs):
        record = types.SimpleNamespace(kind=self.kind, args=args, kwargs=kwargs, pure=[],
                                       scripts=[], binaries=[], datas=[])
        self.calls.append(record)
        return record


def _exec_spec(monkeypatch, tmp_path, models: Path | None = None) -> list:
    """Run linea.spec with PyInstaller's globals and hook helpers replaced by recorders."""
    qt = tmp_path / "PySide6"
    qt.mkdir()
    for name in ("QtCore", "QtGui", "QtWidgets", "QtNetwork", "QtQml", "QtWebEngineCore"):
        (qt / f"{name}.abi3.so").touch()
    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_submodules = lambda package, filter: [
        m for m in (f"{package}.utils", f"{package}.models.llama", f"{package}.models.gemma2",
                    f"{package}.pipelines.flux", f"{package}.pipelines.sana") if filter(m)]
    hooks.copy_metadata = lambda package, recursive: [(f"/meta/{package}.dist-info", ".")]
    hooks.get_package_paths = lambda package: ("", str(qt))
    hooks.get_module_attribute = lambda module, attribute: "12.8"
    for name in ("PyInstaller", "PyInstaller.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "PyInstaller.utils.hooks", hooks)
    if models is None:
        monkeypatch.delenv(bundle.MODELS_OVERRIDE_ENV, raising=False)
    else:
        monkeypatch.setenv(bundle.MODELS_OVERRIDE_ENV, str(models))
    calls: list = []
    spec_globals = {"SPECPATH": str(ROOT / "installer"), "__name__": "__main__"}
    for kind in ("Analysis", "PYZ", "EXE", "COLLECT"):
        spec_globals[kind] = _Recorder(calls, kind)
    source = (ROOT / "installer" / "linea.spec").read_text(encoding="utf-8")
    exec(compile(source, "linea.spec", "exec"), spec_globals)
    return calls


def test_spec_builds_a_onedir_app_without_test_tools_or_unused_qt(monkeypatch, tmp_path):
    calls = _exec_spec(monkeypatch, tmp_path)
    analysis = next(c for c in calls if c.kind == "Analysis")
    assert analysis.args[0] == [str(ROOT / "main.py")]
    assert analysis.kwargs["runtime_hooks"] == [str(bundle.RUNTIME_HOOK)]
    excludes = set(analysis.kwargs["excludes"])
    assert {"pytest", "pytestqt", "ruff", "kernels", "PySide6.QtNetwork", "PySide6.QtQml",
            "PySide6.QtWebEngineCore"} <= excludes
    assert not {"PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets"} & excludes
    hidden = analysis.kwargs["hiddenimports"]
    assert "app.smoke" in hidden
    assert "transformers.models.gemma2" in hidden and "diffusers.pipelines.sana" in hidden
    assert "transformers.models.llama" not in hidden and "diffusers.pipelines.flux" not in hidden
    assert ("/meta/diffusers.dist-info", ".") in analysis.kwargs["datas"]
    launchers = {c.kwargs["name"]: c.kwargs for c in calls if c.kind == "EXE"}
    assert launchers["Linea"]["console"] is False and launchers["linea-cli"]["console"] is True
    assert all(kw["exclude_binaries"] and kw["upx"] is False for kw in launchers.values())
    collect = next(c for c in calls if c.kind == "COLLECT")
    assert collect.kwargs["name"] == "Linea"


def test_spec_bundles_the_models_folder_it_is_given(monkeypatch, tmp_path):
    models = tmp_path / "models"
    (models / "linea-tiny" / "vae").mkdir(parents=True)
    (models / "linea-tiny" / "model_index.json").write_text("{}")
    (models / "linea-tiny" / "vae" / "w.safetensors").write_bytes(b"w")
    calls = _exec_spec(monkeypatch, tmp_path, models)
    datas = next(c for c in calls if c.kind == "Analysis").kwargs["datas"]
    assert (str(models / "linea-tiny" / "vae" / "w.safetensors"),
            str(Path("assets/models/linea-tiny/vae"))) in datas
    assert not any(source.startswith(str(ROOT / "assets" / "models")) for source, _ in datas)


def test_file_filter_keeps_only_loadable_libraries():
    keep = bundle.keep_file
    assert keep("torch/lib/libtorch_cpu.so", None)
    assert keep("bitsandbytes/libbitsandbytes_cpu.so", None)
    assert not keep("bitsandbytes/libbitsandbytes_cuda128.so", None)
    assert keep("bitsandbytes\\libbitsandbytes_cuda128.dll", "12.8")
    assert not keep("bitsandbytes/libbitsandbytes_cuda130.so", "12.8")
    assert not keep("bitsandbytes/libbitsandbytes_rocm64.so", "12.8")
    assert not keep("torch/bin/test_api", None)
    assert keep("torch/bin/torch_shm_manager", None)


def test_library_filter_keeps_what_the_runtime_loads():
    keep = bundle.keep_library_module
    assert keep("diffusers.pipelines.sana.pipeline_sana_sprint")
    assert keep("diffusers.pipelines.pipeline_utils")
    assert keep("transformers.quantizers.quantizer_bnb_8bit")
    assert keep("transformers.models.gemma2.modeling_gemma2")
    assert not keep("transformers.models.llama.modeling_llama")
    assert not keep("diffusers.pipelines.flux.pipeline_flux")
    assert not keep("transformers.cli.serve")


# ----- payload and installer ---------------------------------------------------------------------

def _fake_bundle(root: Path) -> Path:
    folder = root / "Linea"
    (folder / "_internal" / "torch" / "lib").mkdir(parents=True)
    (folder / "Linea.exe").write_bytes(b"MZ launcher")
    (folder / "linea-cli.exe").write_bytes(b"MZ console launcher")
    (folder / "_internal" / "base_library.zip").write_bytes(b"small")
    for name, size in (("torch_cuda.dll", 300_000), ("cudnn64_9.dll", 250_000),
                       ("cublasLt64_12.dll", 200_000)):
        (folder / "_internal" / "torch" / "lib" / name).write_bytes(os.urandom(size))
    return folder


def test_payload_groups_large_files_into_archives_under_the_limit(tmp_path):
    folder = _fake_bundle(tmp_path)
    files = package.payload_files(folder, min_size=100_000)
    assert [f.name for f in files] == ["torch_cuda.dll", "cudnn64_9.dll", "cublasLt64_12.dll"]
    groups = package.group_archives(folder, files, limit=500_000)
    assert [[f.name for f in g] for g in groups] == [["torch_cuda.dll", "cublasLt64_12.dll"],
                                                     ["cudnn64_9.dll"]]
    out = tmp_path / "out"
    out.mkdir()
    payload = package.write_payload(folder, files, out, "Linea-0.1.0-cuda", limit=500_000)
    lines = payload.manifest.read_text().splitlines()
    assert len(lines) == len(payload.archives) == 2
    for line, archive in zip(lines, payload.archives, strict=True):
        digest, name = line.split("  ")
        assert name == archive.name
        assert digest == hashlib.sha256(archive.read_bytes()).hexdigest()
    with zipfile.ZipFile(payload.archives[1]) as zf:
        assert zf.namelist() == ["_internal/torch/lib/cudnn64_9.dll"]
        assert zf.read("_internal/torch/lib/cudnn64_9.dll") == (
            folder / "_internal" / "torch" / "lib" / "cudnn64_9.dll").read_bytes()


def test_staged_program_leaves_the_payload_out(tmp_path):
    folder = _fake_bundle(tmp_path)
    leave_out = package.payload_files(folder, min_size=100_000)
    staged = tmp_path / "staged"
    package.stage_program(folder, staged, leave_out)
    assert sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()) == [
        "Linea.exe", str(Path("_internal/base_library.zip")), "linea-cli.exe"]


@needs_makensis
@pytest.mark.parametrize("split", [False, True], ids=["one-file", "split-payload"])
def test_nsis_script_compiles_without_warnings(tmp_path, split):
    folder = _fake_bundle(tmp_path)
    vcredist = tmp_path / "vc_redist.x64.exe"
    vcredist.write_bytes(b"MZ redistributable")
    out = tmp_path / "Zoë's installer"  # spaces, apostrophe and non-ASCII in the output path
    files = package.make_installer(folder, out, "0.1.0", "cuda", split=split, vcredist=vcredist,
                                   compressor="zlib", payload_min=100_000,
                                   archive_limit=500_000, icon=bundle.ICON)
    assert bundle.ICON.is_file()  # the shipped icon goes into the setup program
    setup = out / "Linea-0.1.0-cuda-setup.exe"
    assert files[0] == setup and setup.read_bytes()[:2] == b"MZ"
    names = sorted(f.name for f in files[1:])
    expected = (["Linea-0.1.0-cuda-payload-1.zip", "Linea-0.1.0-cuda-payload-2.zip",
                 "Linea-0.1.0-cuda-payload.sha256"] if split else [])
    assert names == expected
    assert not (out / "Linea-0.1.0-cuda-program").exists()


def test_a_bundle_too_deep_for_windows_paths_is_refused(tmp_path):
    folder = _fake_bundle(tmp_path)
    deep = folder / "_internal" / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    (deep / "f.txt").write_text("x")
    with pytest.raises(package.PackagingError, match="characters deep"):
        package.make_installer(folder, tmp_path / "out", "0.1.0", "cpu", split=False)


def test_version_quad_pads_to_four_numbers():
    assert package.version_quad("0.1.0") == "0.1.0.0"
    assert package.version_quad("2.3") == "2.3.0.0"


# ----- smoke test (source checkout) --------------------------------------------------------------

def test_smoke_test_passes_from_source(data_dir, capsys):
    from app.smoke import run_smoke_test

    assert run_smoke_test() == 0
    assert "smoke test passed" in capsys.readouterr().out


def test_smoke_test_fails_without_offline_switches(data_dir, monkeypatch, capsys):
    from app.smoke import run_smoke_test

    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert run_smoke_test() == 1
    assert "HF_HUB_OFFLINE is not set" in capsys.readouterr().err


def test_frozen_smoke_test_without_a_bundled_model_says_so(data_dir, monkeypatch, tmp_path,
                                                           capsys):
    from app.smoke import run_smoke_test

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "bundle"), raising=False)
    assert run_smoke_test() == 1
    err = capsys.readouterr().err
    assert "No usable model in" in err and "Rebuild with the model under assets/models" in err


# ----- the full build ----------------------------------------------------------------------------

@pytest.mark.installer
@pytest.mark.skipif(shutil.which("makensis") is None, reason="makensis (NSIS) is not installed")
def test_cpu_build_makes_a_bundle_whose_smoke_test_passes(tmp_path):
    pytest.importorskip("PyInstaller", reason="PyInstaller is not installed (.[installer])")
    from models.replica import write_replica

    write_replica("sana-600m", tmp_path / "models" / "replica", tiny=True, seed=0)
    done = subprocess.run(
        [sys.executable, str(ROOT / "installer" / "build.py"), "--target", "cpu", "--models",
         str(tmp_path / "models"), "--dist", str(tmp_path / "dist"), "--payload", "split",
         "--compressor", "zlib"],
        cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "dist" / "cpu" / "build-report.json").read_text())
    assert report["smoke_test_output"].startswith("smoke test passed: replica (bundled)")
    assert report["models_bytes"] > 0
    stem = f"Linea-{__version__}-cpu"
    assert {f"{stem}-setup.exe", f"{stem}-payload.sha256"} <= set(report["installer_files"])
