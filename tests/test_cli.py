"""The command line: happy paths on small settings, and every bad input as one line, exit 2, nothing
written."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli as run

QUICK = ["--steps", "2", "--batch-size", "16"]


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_sample_writes_npz_of_uint8_images(tmp_path, capsys):
    code, out, _ = run(
        capsys, "sample", "--n", "5", *QUICK, "--out", str(tmp_path / "s.npz"), "--json"
    )
    assert code == 0
    images = np.load(tmp_path / "s.npz")["images"]
    assert images.dtype == np.uint8 and images.shape == (5, 1, 16, 16)
    assert json.loads(out)["n"] == 5
    assert listing(tmp_path) == ["s.npz"]


def test_sample_png_grid_and_same_seed_same_images(tmp_path, capsys):
    from PIL import Image

    assert run(capsys, "sample", "--n", "9", *QUICK, "--out", str(tmp_path / "g.png"))[0] == 0
    assert Image.open(tmp_path / "g.png").size == ((3 * 17 - 1) * 4, (3 * 17 - 1) * 4)
    for name in ("a.npz", "b.npz"):
        run(capsys, "sample", "--n", "3", *QUICK, "--seed", "7", "--out", str(tmp_path / name))
    assert np.array_equal(
        np.load(tmp_path / "a.npz")["images"], np.load(tmp_path / "b.npz")["images"]
    )


def test_eval_writes_report_folder_and_json(tmp_path, capsys):
    out_dir = tmp_path / "rep"
    code, out, _ = run(capsys, "eval", "--n", "16", *QUICK, "--out", str(out_dir), "--json")
    assert code == 0
    report = json.loads(out)
    assert (
        report["command"] == "eval" and report["model"] == "digits" and report["fid_samples"] == 16
    )
    assert report["original"]["fid"] > 0 and report["compressed"] is None
    assert listing(out_dir) == ["report.json", "report.md", "samples.png"]
    assert json.loads((out_dir / "report.json").read_text())["original"] == report["original"]


def test_eval_on_a_user_diffusers_folder_says_fid_needs_inception(tiny_unet_dir, capsys):
    code, out, _ = run(capsys, "eval", "--model", str(tiny_unet_dir), "--n", "4", *QUICK)
    assert code == 0
    assert "FID: not computed" in out and "--inception-weights" in out


def test_info_json(capsys):
    code, out, _ = run(capsys, "info", "--json")
    info = json.loads(out)
    assert code == 0 and info["class"] == "UNet2DModel" and info["sample_shape"] == [1, 16, 16]
    assert info["macs_per_sample_step"] > info["params"] > 1_000_000


def corrupt_model(tmp_path, tiny_unet_dir):
    weights = tiny_unet_dir / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"\x00" * 64)
    return tiny_unet_dir


def not_a_model(tmp_path, tiny_unet_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.txt").write_text("meow")
    return folder


BAD_MODELS = {
    "missing path": (lambda tmp, _: tmp / "nowhere", "no model at"),
    "not a diffusers folder": (not_a_model, "not a diffusers model folder"),
    "corrupt safetensors": (corrupt_model, "not a readable safetensors file"),
    "unknown name": (lambda tmp, _: "sdxl-turbo-please", "no model at"),
}


@pytest.mark.parametrize("case", BAD_MODELS)
@pytest.mark.parametrize("command", ["eval", "sample", "info"])
def test_bad_model_one_line_exit_2_nothing_written(case, command, tmp_path, tiny_unet_dir, capsys):
    make, message = BAD_MODELS[case]
    model = make(tmp_path, tiny_unet_dir)
    before = listing(tmp_path)
    out_args = {
        "eval": ["--out", str(tmp_path / "o")],
        "sample": ["--out", str(tmp_path / "o.png")],
        "info": [],
    }
    code, out, err = run(capsys, command, "--model", str(model), *out_args[command])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("accel: error: ") and message in err
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    "argv,message",
    [
        (["eval", "--n", "0"], "--n must be at least 2"),
        (["sample", "--n", "0"], "--n must be at least 1"),
        (["sample", "--n", "2", "--out", "{tmp}/x.jpg"], ".png"),
        (["sample", "--n", "2", "--out", "{tmp}/no/such/dir/x.png"], "does not exist"),
        (["eval", "--steps", "0"], "--steps"),
        (
            ["eval", "--device", "cuda:0"]
            if not __import__("torch").cuda.is_available()
            else ["eval", "--device", "tpu"],
            "--device",
        ),
        (["eval", "--sampler", "euler"], "--sampler 'euler' is not a sampler"),
        (["eval", "--sampler", "ddpm", "--eta", "0.5"], "--eta applies to DDIM only"),
        (["eval", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["eval", "--latency-batch", "0"], "--latency-batch must be at least 1"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "sample" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "x.png")]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err
    assert listing(tmp_path) == []


def test_existing_outputs_are_refused_unless_overwrite(tmp_path, capsys):
    taken = tmp_path / "rep"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    code, _, err = run(capsys, "eval", "--n", "4", *QUICK, "--out", str(taken))
    assert code == 2 and "--overwrite" in err and listing(taken) == ["mine.txt"]
    grid = tmp_path / "g.png"
    grid.write_bytes(b"old")
    code, _, err = run(capsys, "sample", "--n", "4", *QUICK, "--out", str(grid))
    assert code == 2 and grid.read_bytes() == b"old"
    assert run(capsys, "sample", "--n", "4", *QUICK, "--out", str(grid), "--overwrite")[0] == 0
    assert grid.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_eval_with_fewer_steps_against_the_original_reports_calls_macs_and_time_per_image(capsys):
    code, stdout, _ = run(
        capsys,
        "eval",
        "--model",
        "digits",
        "--steps",
        "5",
        "--baseline",
        "digits",
        "--n",
        "4",
        "--json",
    )
    report = json.loads(stdout)
    original, compressed = report["original"], report["compressed"]
    assert code == 0 and (original["calls_per_image"], compressed["calls_per_image"]) == (50, 5)
    assert (
        compressed["macs_per_image"] * 10 == original["macs_per_image"]
        and report["delta"]["macs_ratio"] == 0.1
    )
    assert original["sampler"]["steps"] == 50 and report["sampler"]["steps"] == 5
    assert compressed["sampling_s_per_image"] > 0 and report["delta"]["speedup"] > 0


@pytest.mark.slow
def test_console_script_error_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "accel.cli", "info", "--model", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().startswith("accel: error: no model at")
        and "Traceback" not in result.stderr
    )
