"""PNG metadata round trips, the command line's contract, and the offline guard."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from runtime import Engine, GenerationRequest, read_request, save_png
from runtime.output import AI_SOURCE_TYPE, parse_a1111

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def result(sana_tiny):
    engine = Engine(sana_tiny, device="cpu")
    request = GenerationRequest("a red circle, on white", negative_prompt="blurry", width=96,
                                height=64, steps=3, guidance_scale=5.0, seed=1234, count=2)
    return engine.generate(request, previews=False)


def test_png_carries_a1111_parameters_json_and_ai_tag(result, tmp_path):
    path = save_png(result.images[1], tmp_path / "image.png", result.record(1))
    with Image.open(path) as image:
        assert image.size == (96, 64)
        text = dict(image.text)
    params = text["parameters"]
    assert params.startswith("a red circle, on white\nNegative prompt: blurry\n")
    assert "Steps: 3, Sampler: Flow-DPM-Solver, CFG scale: 5.0, Seed: 1235, Size: 96x64" in params
    assert "Guidance interval" not in params  # this model guides every step
    record = json.loads(text["linea"])
    assert record["request"]["seed"] == 1235 and record["request"]["count"] == 1
    assert record["guidance_scale"] == 5.0 and record["guidance_interval"] == [0.0, 1.0]
    assert AI_SOURCE_TYPE in text["XML:com.adobe.xmp"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_stored_request_remakes_the_same_image(result, sana_tiny, tmp_path):
    path = save_png(result.images[1], tmp_path / "image.png", result.record(1))
    request = read_request(path)
    again = Engine(sana_tiny, device="cpu").generate(request.with_changes(model=""),
                                                     previews=False)
    assert again.images[0].tobytes() == result.images[1].tobytes()


def test_a1111_parameters_say_a_models_guidance_interval_and_still_read_back(
        sana_tiny, with_interval, tmp_path):
    folder = with_interval(sana_tiny, [0.2, 0.8])
    request = GenerationRequest("a red circle", width=64, height=64, steps=2,
                                guidance_scale=3.0, seed=7)
    result = Engine(folder, device="cpu").generate(request, previews=False)
    path = save_png(result.images[0], tmp_path / "image.png", result.record(0))
    with Image.open(path) as image:
        params = image.text["parameters"]
    assert "CFG scale: 3.0, Guidance interval: 0.2-0.8, Seed: 7" in params
    fields = parse_a1111(params)
    assert fields["guidance_scale"] == 3.0 and fields["seed"] == 7 and fields["steps"] == 2


def test_a1111_parameters_from_another_tool_are_read():
    text = ("portrait of a fox, autumn\nNegative prompt: lowres\n"
            "Steps: 28, Sampler: Euler a, CFG scale: 7, Seed: 99, Size: 832x1216, Model: x")
    fields = parse_a1111(text)
    assert fields == {"prompt": "portrait of a fox, autumn", "negative_prompt": "lowres",
                      "steps": 28, "guidance_scale": 7.0, "seed": 99, "width": 832,
                      "height": 1216}


def _cli(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_generate_models_and_exit_codes(sana_tiny, tmp_path, data_dir):
    out = tmp_path / "cat.png"
    done = _cli("generate", "a cat", "--model", str(sana_tiny), "--out", str(out), "--steps",
                "2", "--seed", "5", "--width", "64", "--height", "64", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert read_request(out).seed == 5
    again = _cli("generate", "a cat", "--model", str(sana_tiny), "--out", str(out), cwd=tmp_path)
    assert again.returncode == 4 and "exists already" in again.stderr
    assert "Traceback" not in again.stderr
    bad = _cli("generate", "a cat", "--model", str(tmp_path), "--out", str(tmp_path / "b.png"),
               cwd=tmp_path)
    assert bad.returncode == 3 and "model_index.json" in bad.stderr
    size = _cli("generate", "a cat", "--model", str(sana_tiny), "--out", str(tmp_path / "c.png"),
                "--width", "100", cwd=tmp_path)
    assert size.returncode == 2 and "multiple of 32" in size.stderr
    not_image = tmp_path / "notes.txt"
    not_image.write_text("not a sketch")
    control = _cli("generate", "a cat", "--model", str(sana_tiny), "--out",
                   str(tmp_path / "d.png"), "--control", str(not_image), cwd=tmp_path)
    assert control.returncode == 2 and "not an image Linea can read" in control.stderr
    assert "Loading" not in control.stderr  # refused before the model was loaded
    if Path("/proc").is_dir():  # a folder no one can create files in, even an administrator
        locked = _cli("generate", "a cat", "--model", str(sana_tiny), "--out", "/proc/e.png",
                      cwd=tmp_path)
        assert locked.returncode == 4 and "cannot be written" in locked.stderr
        assert "Loading" not in locked.stderr and "Traceback" not in locked.stderr
    assert not (tmp_path / "d.png").exists()
    listing = _cli("models", "--json", "--models-dir", str(sana_tiny.parent), cwd=tmp_path)
    assert listing.returncode == 0
    names = [m["name"] for m in json.loads(listing.stdout)["models"]]
    assert sana_tiny.resolve().name in names
    doctor = _cli("doctor", "--json", cwd=tmp_path)
    assert doctor.returncode == 0
    report = json.loads(doctor.stdout)
    assert report["versions"]["diffusers"] and "CPU" in report["device"]


def test_sockets_are_disabled_in_tests():
    with pytest.raises(Exception, match=r"(?i)socket"):
        socket.create_connection(("127.0.0.1", 9))


def test_entry_point_sets_offline_switches_before_hub_imports():
    code = ("import sys; sys.argv=['main.py']; import main, os; "
            "print(os.environ['HF_HUB_OFFLINE'], os.environ['TRANSFORMERS_OFFLINE'], "
            "'huggingface_hub' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if "OFFLINE" not in k}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.split() == ["1", "1", "False"], done.stderr
