"""`accel prune` end to end on the built-in model (quick settings) and its bad input: one line, exit
2, nothing written; an interrupted fine-tuning run resumes only with --resume and only with the same
settings."""

import json

import numpy as np
import pytest

import accel
from accel.train import NoisePrediction
from conftest import refused
from conftest import run_cli as run

pytestmark = pytest.mark.slow  # every test here runs a whole command or chain

# seconds, not minutes: few samples and steps; every flag that sizes work is set
QUICK = [
    "--n",
    "64",
    "--steps",
    "4",
    "--batch-size",
    "64",
    "--finetune-steps",
    "4",
    "--train-batch",
    "8",
    "--importance-batch",
    "8",
    "--timestep-stride",
    "100",
    "--checkpoint-every",
    "2",
]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """`accel prune --ratio 0.3` on digits (quick), its JSON report and its artifact folder."""
    import contextlib
    import io

    from accel.cli import main

    out = tmp_path_factory.mktemp("prune") / "p30"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        assert main(["prune", "--ratio", "0.3", *QUICK, "--out", str(out), "--json"]) == 0
    return json.loads(stdout.getvalue()), out


def test_prune_writes_a_smaller_artifact_with_its_report(pruned):
    report, out = pruned
    assert report["command"] == "prune" and report["out"] == str(out)
    assert report["compressed"]["macs"] < 0.6 * report["original"]["macs"]
    assert report["compressed"]["params"] < 0.6 * report["original"]["params"]
    pruning = report["pruning"]
    assert (
        pruning["finetune"]["config"]["steps"] == 4
        and pruning["importance"]["criterion"] == "diff-pruning"
    )
    assert (
        pruning["finetune"]["loss_per_tenth"]
        and pruning["fid_before_finetune"] != report["compressed"]["fid"]
    )
    assert {"report.json", "report.md", "samples.png", "accel.json", "model.safetensors"} <= {
        p.name for p in out.iterdir()
    }
    # the fine-tuning checkpoint is gone once the artifact is in
    assert not out.with_name("p30.partial").exists()
    assert [t["name"] for t in accel.load(out).transforms] == ["prune"]


def test_the_fid_before_finetuning_is_that_of_the_model_pruned_without_it(pruned, capsys, tmp_path):
    """The report's FID right after pruning is measured on the right model: pruning alone gives the
    same FID."""
    report, _ = pruned
    code, text, err = run(
        capsys,
        "prune",
        "--ratio",
        "0.3",
        *QUICK,
        "--finetune-steps",
        "0",
        "--out",
        str(tmp_path / "p0"),
        "--json",
    )  # the last --finetune-steps counts
    assert code == 0, err
    alone = json.loads(text)
    assert alone["pruning"]["finetune"] is None
    assert alone["compressed"]["fid"] == report["pruning"]["fid_before_finetune"]


def test_a_pruned_artifact_quantizes_exports_and_evaluates(pruned, capsys, tmp_path):
    _, out = pruned
    code, _, err = run(
        capsys,
        "quantize",
        "--model",
        str(out),
        "--bits",
        "8",
        "--n",
        "16",
        "--steps",
        "2",
        "--calib-samples",
        "2",
        "--recon-iters",
        "0",
        "--out",
        str(tmp_path / "p30-w8"),
    )
    assert code == 0, err
    assert [t["name"] for t in accel.load(tmp_path / "p30-w8").transforms] == ["prune", "quantize"]
    code, _, err = run(
        capsys,
        "export",
        "onnx",
        "--model",
        str(tmp_path / "p30-w8"),
        "--out",
        str(tmp_path / "p30.onnx"),
    )
    assert code == 0, err
    code, out_text, err = run(
        capsys, "eval", "--model", str(tmp_path / "p30.onnx"), "--n", "16", "--json"
    )
    assert code == 0, err
    assert json.loads(out_text)["compressed"]["params"] is not None


@pytest.mark.parametrize("ratio", ["0", "1", "1.5", "-0.2"])
def test_a_ratio_outside_zero_one_is_refused(capsys, tmp_path, ratio):
    err = refused(capsys, tmp_path, "prune", "--ratio", ratio, *QUICK, "--out", str(tmp_path / "x"))
    assert "--ratio must be between 0 and 1" in err


def test_a_ratio_that_empties_a_groupnorm_group_is_refused(capsys, tmp_path):
    err = refused(
        capsys, tmp_path, "prune", "--ratio", "0.95", *QUICK, "--out", str(tmp_path / "x")
    )
    assert "--ratio 0.95 would leave a group of" in err and "no channel" in err


def test_a_quantized_model_is_refused_prune_first(pruned, capsys, tmp_path):
    model = accel.load("digits")
    accel.quantize_(model, accel.QuantConfig(w_bits=8, a_bits=None), None, progress=False)
    accel.save(model, tmp_path / "w8")
    err = refused(
        capsys,
        tmp_path,
        "prune",
        "--model",
        str(tmp_path / "w8"),
        *QUICK,
        "--out",
        str(tmp_path / "x"),
    )
    assert "cannot prune this model: it went through quantize" in err


def _npz(path, images):
    np.savez(path, images=images)
    return str(path)


def test_data_free_finetuning_learns_from_the_original(capsys, tmp_path):
    code, text, err = run(
        capsys,
        "prune",
        *QUICK,
        "--data",
        "teacher",
        "--teacher-samples",
        "8",
        "--finetune-steps",
        "2",
        "--out",
        str(tmp_path / "free"),
        "--json",
    )
    assert code == 0, err
    assert (
        json.loads(text)["pruning"]["finetune"]["data"]
        == "8 samples of the original model (data-free)"
    )


def test_bad_data_is_refused(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "corrupt.npz").write_bytes(b"PK\x03\x04 not a zip")
    cases = {
        str(data / "missing.npz"): "no such file",
        str(data / "corrupt.npz"): "cannot read images",
        _npz(data / "float.npz", np.zeros((4, 1, 16, 16), np.float32)): "must be uint8",
        _npz(data / "rgb.npz", np.zeros((4, 3, 16, 16), np.uint8)): "images are (3, 16, 16)",
        _npz(data / "small.npz", np.zeros((4, 1, 8, 8), np.uint8)): "images are (1, 8, 8)",
    }
    for path, message in cases.items():
        err = refused(
            capsys, tmp_path, "prune", "--data", path, *QUICK, "--out", str(tmp_path / "x")
        )
        assert message in err, err
    err = refused(
        capsys,
        tmp_path,
        "prune",
        "--data",
        "teacher",
        "--teacher-samples",
        "1",
        *QUICK,
        "--out",
        str(tmp_path / "x"),
    )
    assert "--teacher-samples must be at least 2" in err


def test_an_interrupted_finetune_resumes_only_with_resume_and_the_same_settings(
    capsys, tmp_path, monkeypatch
):
    out = str(tmp_path / "p")
    real_loss = NoisePrediction.loss
    calls = {"n": 0}

    def dies_on_fourth_step(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_loss(self, *args)

    monkeypatch.setattr(NoisePrediction, "loss", dies_on_fourth_step)
    code, _, err = run(capsys, "prune", *QUICK, "--out", out)
    assert code == 130 and "interrupted" in err
    assert (
        not (tmp_path / "p").exists()
        and (tmp_path / "p.partial" / "checkpoint" / "state.json").is_file()
    )
    monkeypatch.setattr(NoisePrediction, "loss", real_loss)
    err = refused(capsys, tmp_path, "prune", *QUICK, "--out", out)
    assert "holds an interrupted run: pass --resume" in err
    err = refused(capsys, tmp_path, "prune", *QUICK, "--ratio", "0.5", "--resume", "--out", out)
    assert "belongs to another run (prune differ)" in err
    code, text, err = run(capsys, "prune", *QUICK, "--resume", "--out", out, "--json")
    assert code == 0, err
    assert json.loads(text)["pruning"]["finetune"]["resumed_at_step"] == 2
    assert not (tmp_path / "p.partial").exists()
