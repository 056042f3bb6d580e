"""`accel cache` end to end on the built-in model (quick settings): the report with its equal-MACs
comparison, the artifact that samples with its cache, quantizing and exporting it, and bad input:
one line, exit 2, nothing written."""

import json

import pytest

from conftest import refused
from conftest import run_cli as run

pytestmark = pytest.mark.slow  # every test here runs a whole command or chain

QUICK = ["--n", "16", "--batch-size", "16", "--steps", "12"]


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """`accel cache --interval 3 --schedule uniform` on digits at 12 DDIM steps: its JSON report and
    its artifact folder."""
    import contextlib
    import io

    from accel.cli import main

    out = tmp_path_factory.mktemp("cache") / "c3"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        assert (
            main(
                [
                    "cache",
                    "--interval",
                    "3",
                    "--schedule",
                    "uniform",
                    *QUICK,
                    "--out",
                    str(out),
                    "--json",
                ]
            )
            == 0
        )
    return json.loads(stdout.getvalue()), out


def test_cache_reports_both_costs_and_the_plain_sampler_at_equal_macs(cached):
    report, out = cached
    assert report["command"] == "cache" and report["config"]["interval"] == 3
    section = report["cache"]
    assert section["full_steps"] == [0, 3, 6, 9] and section["calls_per_image"] == {
        "full": 4,
        "cached": 8,
    }
    full, cheap = section["macs_per_full_step"], section["macs_per_cached_step"]
    assert cheap < full / 2
    assert report["compressed"]["macs_per_image"] == 4 * full + 8 * cheap
    assert report["original"]["macs_per_image"] == 12 * full
    # the step count whose MACs per image are nearest the cache's
    plain = section["plain_sampler_at_equal_macs"]
    assert abs(plain["macs_per_image"] - report["compressed"]["macs_per_image"]) <= full / 2
    assert plain["fid"] is not None and report["delta"]["psnr_db_vs_original"] is not None
    assert {"report.json", "report.md", "samples.png", "accel.json", "model.safetensors"} <= {
        p.name for p in out.iterdir()
    }
    assert "## Cache" in (out / "report.md").read_text()


def test_the_artifact_samples_with_its_cache_through_eval_quantize_and_onnx(
    cached, capsys, tmp_path
):
    _, out = cached
    code, text, err = run(
        capsys, "eval", "--model", str(out), "--n", "8", "--steps", "12", "--json"
    )
    assert code == 0, err
    report = json.loads(text)
    assert report["original"]["macs_per_image"] < 12 * report["original"]["macs"]
    quantized = tmp_path / "c3-w8"
    code, text, err = run(
        capsys,
        "quantize",
        "--model",
        str(out),
        "--bits",
        "8",
        "--n",
        "8",
        "--steps",
        "12",
        "--calib-samples",
        "2",
        "--calib-every",
        "3",
        "--recon-iters",
        "0",
        "--out",
        str(quantized),
        "--json",
    )
    assert code == 0, err
    assert [
        t["name"] for t in json.loads((quantized / "accel.json").read_text())["transforms"]
    ] == ["cache", "quantize"]
    code, text, err = run(
        capsys, "export", "onnx", "--model", str(quantized), "--out", str(tmp_path / "c3.onnx")
    )
    assert code == 0, err
    assert "cached steps:" in text and (tmp_path / "c3.cached.onnx").is_file()
    code, text, err = run(
        capsys, "eval", "--model", str(tmp_path / "c3.onnx"), "--n", "8", "--steps", "12", "--json"
    )
    assert code == 0, err
    report = json.loads(text)  # the ONNX Runtime pair beside the PyTorch model it came from
    assert report["compressed"]["macs_per_image"] == report["original"]["macs_per_image"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--interval", "0"], "--interval must be at least 1"),
        (["--branch", "3"], "--branch 3 does not exist"),
        (
            ["--interval", "5", "--steps", "4"],
            "--interval 5 is more than the 4 steps this model samples in",
        ),
        (["--center", "2"], "--center must be a fraction"),
    ],
)
def test_bad_cache_input_is_one_line(capsys, tmp_path, argv, message):
    err = refused(capsys, tmp_path, "cache", *argv, "--n", "8", "--out", str(tmp_path / "c"))
    assert message in err


def test_an_unsupported_architecture_is_refused(capsys, tmp_path):
    from conftest import make_tiny_unet

    folder = tmp_path / "skip-unet"
    make_tiny_unet(
        block_out_channels=(32, 32),
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnSkipDownBlock2D"),
        up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"),
    ).save_pretrained(folder)
    err = refused(
        capsys, tmp_path, "cache", "--model", str(folder), "--n", "8", "--out", str(tmp_path / "c")
    )
    assert "with skip-connection blocks" in err and "is not supported by the cache yet" in err


def test_a_cached_model_is_not_cached_again(cached, capsys, tmp_path):
    _, out = cached
    err = refused(
        capsys, tmp_path, "cache", "--model", str(out), "--n", "8", "--out", str(tmp_path / "c")
    )
    assert "cannot cache this model: it went through cache" in err
