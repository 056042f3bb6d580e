"""`accel distill` end to end on the built-in model (quick settings), the student's sampler
travelling through eval, quantize and ONNX export, and bad input: one line, exit 2, nothing written;
an interrupted run resumes only with --resume and only with the same settings."""

import json

import numpy as np
import pytest

import accel
from accel.distillation.tasks import ProgressiveStage
from conftest import refused
from conftest import run_cli as run

pytestmark = pytest.mark.slow  # every test here runs a whole command or chain

# seconds, not minutes: few samples and training steps; every flag that sizes work is set
QUICK = [
    "--n",
    "32",
    "--batch-size",
    "32",
    "--train-steps",
    "2",
    "--train-batch",
    "4",
    "--checkpoint-every",
    "1",
    "--teacher-steps",
    "8",
]


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """`accel distill --steps 2` on digits (quick): its JSON report and its artifact folder."""
    import contextlib
    import io

    from accel.cli import main

    out = tmp_path_factory.mktemp("distill") / "pd2"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        assert main(["distill", "--steps", "2", *QUICK, "--out", str(out), "--json"]) == 0
    return json.loads(stdout.getvalue()), out


def test_distill_writes_a_student_with_its_sampler_and_report(student):
    report, out = student
    assert report["command"] == "distill" and report["out"] == str(out)
    assert (
        report["original"]["calls_per_image"] == 50 and report["compressed"]["calls_per_image"] == 2
    )
    section = report["distillation"]
    assert [s["student_steps"] for s in section["stages"]] == [4, 2]
    assert section["teacher_at_student_steps"]["timesteps"] == [999, 499]
    assert section["teacher"]["sampler"]["steps"] == 50
    # the teacher's own DDIM at 2 steps, sampled in the same run
    free = section["teacher_at_student_steps"]
    assert free["fid"] is not None and free["sampler"]["steps"] == 2 and free["speedup"] > 5
    assert {"report.json", "report.md", "samples.png", "accel.json", "model.safetensors"} <= {
        p.name for p in out.iterdir()
    }
    assert not out.with_name("pd2.partial").exists()
    model = accel.load(out)
    assert [t["name"] for t in model.transforms] == ["distill"]
    assert model.sampling.steps == 2 and model.sampling.options == {"timestep_spacing": "trailing"}


def test_the_students_sampler_is_the_default_everywhere(student, capsys, tmp_path):
    _, out = student
    code, text, err = run(capsys, "eval", "--model", str(out), "--n", "8", "--json")
    assert code == 0, err
    assert json.loads(text)["original"]["calls_per_image"] == 2  # one model: reported as "original"
    code, text, err = run(capsys, "eval", "--model", str(out), "--n", "8", "--steps", "4", "--json")
    assert code == 0, err
    assert json.loads(text)["original"]["calls_per_image"] == 4  # --steps overrides
    code, text, err = run(
        capsys,
        "quantize",
        "--model",
        str(out),
        "--bits",
        "8",
        "--n",
        "8",
        "--calib-samples",
        "2",
        "--calib-every",
        "1",
        "--recon-iters",
        "0",
        "--out",
        str(tmp_path / "pd2-w8"),
        "--json",
    )
    assert code == 0, err
    calibration = json.loads(text)["calibration"]
    # 2 trajectories x 2 student steps
    assert calibration["sampler"]["steps"] == 2 and calibration["inputs"] == 4
    assert [t["name"] for t in accel.load(tmp_path / "pd2-w8").transforms] == [
        "distill",
        "quantize",
    ]
    code, _, err = run(
        capsys,
        "export",
        "onnx",
        "--model",
        str(tmp_path / "pd2-w8"),
        "--out",
        str(tmp_path / "pd2.onnx"),
    )
    assert code == 0, err
    code, text, err = run(
        capsys, "eval", "--model", str(tmp_path / "pd2.onnx"), "--n", "8", "--json"
    )
    assert code == 0, err
    assert json.loads(text)["compressed"]["calls_per_image"] == 2


def test_consistency_student_samples_at_any_step_count(capsys, tmp_path):
    code, text, err = run(
        capsys,
        "distill",
        "--method",
        "consistency",
        "--steps",
        "1",
        *QUICK,
        "--out",
        str(tmp_path / "cd1"),
        "--json",
    )
    assert code == 0, err
    report = json.loads(text)
    assert (
        report["compressed"]["calls_per_image"] == 1
        and report["compressed"]["sampler"]["name"] == "LCMScheduler"
    )
    code, text, err = run(
        capsys, "eval", "--model", str(tmp_path / "cd1"), "--n", "8", "--steps", "4", "--json"
    )
    assert code == 0, err
    assert json.loads(text)["original"]["calls_per_image"] == 4


def test_a_pruned_model_distills(capsys, tmp_path):
    model = accel.load("digits")
    accel.prune_(model, accel.PruneConfig(ratio=0.3, criterion="magnitude"))
    accel.save(model, tmp_path / "p30")
    code, _, err = run(
        capsys,
        "distill",
        "--model",
        str(tmp_path / "p30"),
        "--steps",
        "4",
        *QUICK,
        "--data",
        "teacher",
        "--teacher-samples",
        "8",
        "--out",
        str(tmp_path / "p30-4step"),
    )
    assert code == 0, err
    assert [t["name"] for t in accel.load(tmp_path / "p30-4step").transforms] == [
        "prune",
        "distill",
    ]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps", "3"], "--steps must be a power of two for progressive distillation"),
        (["--steps", "0"], "--steps must be between 1 and 64"),
        (["--steps", "128"], "--steps must be between 1 and 64"),
        (
            ["--method", "consistency", "--steps", "51"],
            "more than the consistency solver's grid has",
        ),
        (
            ["--teacher-steps", "4", "--steps", "4"],
            "--teacher-steps must be a power of two from 2 x steps (8)",
        ),
        (["--target-ema", "1"], "--target-ema must be in [0, 1)"),
        (["--data", "missing.npz"], "no such file"),
        (["--train-steps", "0"], "--train-steps must be at least 1"),
    ],
)
def test_bad_flags_are_refused(capsys, tmp_path, flags, message):
    err = refused(capsys, tmp_path, "distill", *QUICK, *flags, "--out", str(tmp_path / "x"))
    assert message in err, err


def test_an_unknown_method_is_refused(capsys, tmp_path):
    code, out, err = run(
        capsys, "distill", "--method", "rectified-flow", "--out", str(tmp_path / "x")
    )
    assert (
        code == 2
        and out == ""
        and "invalid choice: 'rectified-flow'" in err
        and err.count("\n") == 1
    )
    assert not list(tmp_path.iterdir())


def test_wrong_shaped_data_is_refused(capsys, tmp_path):
    path = tmp_path / "rgb.npz"
    np.savez(path, images=np.zeros((4, 3, 16, 16), np.uint8))
    err = refused(
        capsys, tmp_path, "distill", *QUICK, "--data", str(path), "--out", str(tmp_path / "x")
    )
    assert "images are (3, 16, 16)" in err


def test_a_quantized_teacher_is_refused_distill_first(capsys, tmp_path):
    model = accel.load("digits")
    accel.quantize_(model, accel.QuantConfig(w_bits=8, a_bits=None), None, progress=False)
    accel.save(model, tmp_path / "w8")
    err = refused(
        capsys,
        tmp_path,
        "distill",
        "--model",
        str(tmp_path / "w8"),
        *QUICK,
        "--out",
        str(tmp_path / "x"),
    )
    assert "distill the full-precision model first, then quantize the student" in err


def test_a_schedule_accel_cannot_step_is_refused(capsys, tmp_path, tiny_unet):
    folder = tmp_path / "flow"
    tiny_unet.save_pretrained(folder)
    (folder / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000})
    )
    err = refused(
        capsys,
        tmp_path,
        "distill",
        "--model",
        str(folder),
        *QUICK,
        "--data",
        "teacher",
        "--out",
        str(tmp_path / "x"),
    )
    assert "flow matching" in err


def test_an_interrupted_run_resumes_in_its_stage_only_with_resume_and_the_same_settings(
    capsys, tmp_path, monkeypatch
):
    out = str(tmp_path / "s")
    real_loss, calls = ProgressiveStage.loss, {"n": 0}

    def dies_in_the_second_stage(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_loss(self, *args)

    monkeypatch.setattr(ProgressiveStage, "loss", dies_in_the_second_stage)
    code, _, err = run(capsys, "distill", "--steps", "2", *QUICK, "--out", out)
    assert code == 130 and "--resume continues" in err
    partial = tmp_path / "s.partial"
    assert (
        not (tmp_path / "s").exists()
        and (partial / "stage-04" / "student" / "state.json").is_file()
    )
    assert (partial / "stage-02" / "checkpoint" / "state.json").is_file()
    monkeypatch.setattr(ProgressiveStage, "loss", real_loss)
    err = refused(capsys, tmp_path, "distill", "--steps", "2", *QUICK, "--out", out)
    assert "holds an interrupted run: pass --resume" in err
    err = refused(
        capsys,
        tmp_path,
        "distill",
        "--steps",
        "2",
        *QUICK,
        "--lr",
        "1e-3",
        "--resume",
        "--out",
        out,
    )
    assert "belongs to another run (train differ)" in err
    code, text, err = run(
        capsys, "distill", "--steps", "2", *QUICK, "--resume", "--out", out, "--json"
    )
    assert code == 0, err
    stages = json.loads(text)["distillation"]["stages"]
    assert stages[0]["resumed_at_step"] == 0 and stages[1]["resumed_at_step"] == 1
    assert not partial.exists()
