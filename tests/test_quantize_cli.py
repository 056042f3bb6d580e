"""``accel quantize`` end to end on tiny settings, the artifact it writes, and its bad inputs."""

import json

import pytest

from conftest import run_cli as run

pytestmark = pytest.mark.slow  # every test here runs a whole command or chain

TINY = [
    "--n",
    "24",
    "--steps",
    "3",
    "--batch-size",
    "24",
    "--calib-samples",
    "2",
    "--calib-every",
    "1",
    "--recon-iters",
    "2",
]


@pytest.fixture(autouse=True)
def calib_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path / "cache"))


def test_quantize_writes_artifact_that_reloads_with_the_same_samples(tmp_path, capsys):
    out = tmp_path / "q4"
    code, stdout, _ = run(capsys, "quantize", "--bits", "4", *TINY, "--out", str(out), "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["command"] == "quantize" and report["delta"]["size_ratio"] < 0.2
    assert 0 < report["delta"]["psnr_db_vs_original"] < 100  # changed, but close
    # along the sampler the model was run with: 2 trajectories of 3 steps
    calibration = report["calibration"]
    assert (
        calibration["policy"] == "uniform"
        and calibration["sampler"]["steps"] == 3
        and calibration["inputs"] == 6
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "accel.json",
        "config.json",
        "model.safetensors",
        "report.json",
        "report.md",
        "samples.png",
        "scheduler_config.json",
    ]
    code, stdout, _ = run(
        capsys,
        "eval",
        "--model",
        str(out),
        "--n",
        "24",
        "--steps",
        "3",
        "--batch-size",
        "24",
        "--json",
    )
    assert code == 0
    assert json.loads(stdout)["original"]["fid"] == pytest.approx(
        report["compressed"]["fid"], rel=1e-9
    )


def test_quantize_ablation_rows(tmp_path, capsys):
    code, stdout, _ = run(
        capsys,
        "quantize",
        "--bits",
        "4",
        *TINY,
        "--out",
        str(tmp_path / "q"),
        "--ablation",
        "--json",
    )
    rows = json.loads(stdout)["ablation"]["rows"]
    assert code == 0 and [r["name"] for r in rows][:1] + [r["name"][:6] for r in rows[1:]] == [
        "W4A8 naive (min/max, last-step calibration)",
        "+ time",
        "+ MSE-",
        "+ spli",
        "+ bias",
        "+ reco",
        "W8A8 (",
    ]
    assert all(r["fid"] > 0 and r["psnr_db"] > 0 for r in rows)
    assert "## Ablation" in (tmp_path / "q" / "report.md").read_text()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--bits", "1"], "--bits must be between 2 and 8"),
        (["--bits", "9"], "--bits must be between 2 and 8"),
        (["--bits", "4", "--act-bits", "3"], "--act-bits must be between 4 and 16"),
        (["--bits", "4", "--act-bits", "17"], "--act-bits must be between 4 and 16"),
        (["--bits", "4", "--layer-bits", "encoder.*=8"], "matches no quantizable layer"),
        (["--bits", "4", "--skip", "nothing.here"], "matches no quantizable layer"),
        (["--bits", "4", "--layer-bits", "conv_in"], "PATTERN=BITS"),
        (["--rounding", "gptq"], "reconstruction learns the rounding itself"),
        (["--rounding", "best"], "invalid choice"),
    ],
)
def test_bad_quantize_arguments(argv, message, tmp_path, capsys):
    code, out, err = run(capsys, "quantize", *argv, *TINY, "--out", str(tmp_path / "q"))
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err
    assert not (tmp_path / "q").exists()
    assert [p.name for p in tmp_path.iterdir()] in ([], ["cache"])


def test_calibration_set_of_another_model_is_refused(tmp_path, capsys, tiny_unet_dir):
    calib = tmp_path / "calib.safetensors"
    assert (
        run(
            capsys,
            "quantize",
            "--bits",
            "8",
            *TINY,
            "--model",
            str(tiny_unet_dir),
            "--calib",
            str(calib),
            "--out",
            str(tmp_path / "a"),
        )[0]
        == 0
    )
    code, _, err = run(
        capsys,
        "quantize",
        "--bits",
        "8",
        *TINY,
        "--calib",
        str(calib),
        "--out",
        str(tmp_path / "b"),
    )
    assert code == 2 and "recorded with sample_shape" in err and not (tmp_path / "b").exists()
