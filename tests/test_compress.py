"""`accel compress`: recipes (built-in and files), the stage chain with its resume rules, the one
report with a row per stage, and bad input (one line, exit 2, nothing written)."""

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import refused
from conftest import run_cli as run

pytestmark = pytest.mark.slow  # every test here runs a whole command or chain

# cache -> quantize -> export on digits, sampled at 10 DDIM steps: a whole chain in seconds
SMALL = """
description = "a chain for tests"
[[stage]]
name = "cache"
interval = 2
steps = 10
[[stage]]
name = "quantize"
bits = 8
act-bits = 0
recon-iters = 0
calib-samples = 2
[[stage]]
name = "export"
format = "onnx"
"""
QUICK = ["--n", "16", "--batch-size", "16"]
# the chains that train and run in several processes sample at 10 DDIM steps: their equalities do
# not depend on the step count, and at 50 the two tests below took 7 of CI's minutes on a 2-core AMD
# EPYC
FEW_STEPS = ["--steps", "10"]
# the built-in `quick` recipe's stages with a few training and calibration steps
TRAINING_CHAIN = """
[[stage]]
name = "prune"
ratio = 0.3
finetune-steps = 8
train-batch = 8
importance-batch = 8
[[stage]]
name = "cache"
interval = 3
[[stage]]
name = "quantize"
bits = 8
act-bits = 0
recon-iters = 0
calib-samples = 4
[[stage]]
name = "export"
format = "onnx"
"""


def recipe_file(folder: Path, text: str, name: str = "r.toml") -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """SMALL run once: its JSON output and OUT."""
    import contextlib
    import io

    from accel.cli import main

    folder = tmp_path_factory.mktemp("compress")
    out = folder / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        assert (
            main(
                [
                    "compress",
                    "--recipe",
                    recipe_file(folder, SMALL),
                    *QUICK,
                    "--out",
                    str(out),
                    "--json",
                ]
            )
            == 0
        )
    return json.loads(stdout.getvalue()), out


def test_every_stage_is_an_artifact_and_the_final_model_sits_in_out(chain):
    report, out = chain
    assert sorted(p.name for p in (out / "stages").iterdir()) == [
        "00-original.onnx",  # the original in the final model's runtime, measured beside it
        "01-cache",
        "02-quantize",
        "03-export",
    ]
    for stage in ("01-cache", "02-quantize"):
        assert {p.name for p in (out / "stages" / stage).iterdir()} == {
            "config.json",
            "scheduler_config.json",
            "accel.json",
            "model.safetensors",
        }  # an artifact, no report
    assert not list((out / "stages").glob("*.partial"))  # no stage left checkpoints behind
    assert report["final"] == str(out / "model.onnx")
    assert (out / "model.onnx").read_bytes() == (
        out / "stages" / "03-export" / "model.onnx"
    ).read_bytes()
    assert (out / "model.cached.onnx").is_file()  # the cached model's second graph travels with it
    for name in (
        "report.json",
        "report.md",
        "samples.png",
        "quality_vs_speed.png",
        "compress.json",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_row_per_stage_against_the_original_measured_in_one_run(chain):
    report, out = chain
    rows = report["stages"]
    names = ["original", "original, exported", "01-cache", "02-quantize", "03-export"]
    assert [r["stage"] for r in rows] == names
    original, original_exported, cached, quantized, exported = rows
    # each with its own sampler
    assert original["calls_per_image"] == 50 and cached["calls_per_image"] == 10
    # cached steps are cheaper
    assert cached["macs_per_image"] < 10 * original["macs_per_image"] / 50
    assert quantized["size_bytes"] < cached["size_bytes"] / 3  # INT8 weights
    assert exported["runtime"].startswith("ONNX Runtime") and original["runtime"] == "PyTorch"
    # the original in the final model's runtime sits beside it: the same samples, another runtime
    assert (
        original_exported["runtime"] == exported["runtime"]
        and float(original_exported["psnr_db"]) > 60
    )
    assert (out / "stages" / "00-original.onnx").is_file()
    assert all(r["fid"] is not None and r["ms_per_image"] > 0 for r in rows)
    assert all(r["stage_seconds"] > 0 and not r["reused"] for r in rows[2:])
    # weight-only INT8 in ONNX Runtime samples what the fake-quantized PyTorch model samples
    assert exported["psnr_db"] == pytest.approx(quantized["psnr_db"], abs=0.5)
    # the report's compared model is the chain's last
    assert report["compressed"]["fid"] == exported["fid"]
    assert report["config"]["stages"][0]["name"] == "cache"


def test_resume_reuses_unchanged_stages_and_redoes_from_the_first_change(chain, tmp_path, capsys):
    report, out = chain
    quantized = out / "stages" / "02-quantize" / "model.safetensors"
    stamp = quantized.stat().st_mtime_ns
    again = recipe_file(out.parent, SMALL)
    code, stdout, err = run(
        capsys, "compress", "--recipe", again, *QUICK, "--out", str(out), "--resume", "--json"
    )
    assert code == 0, err
    rows = json.loads(stdout)["stages"]
    stage_rows = [row for row in rows if row["stage"][0].isdigit()]
    assert all(row["reused"] for row in stage_rows) and quantized.stat().st_mtime_ns == stamp
    assert "stage 2 (quantize): unchanged" in err
    changed = recipe_file(out.parent, SMALL.replace("bits = 8\n", "bits = 6\n"), "changed.toml")
    code, stdout, err = run(
        capsys, "compress", "--recipe", changed, *QUICK, "--out", str(out), "--resume", "--json"
    )
    assert code == 0, err
    rows = json.loads(stdout)["stages"]
    assert [row["reused"] for row in rows if row["stage"][0].isdigit()] == [True, False, False]
    assert (
        json.loads((out / "stages" / "02-quantize" / "accel.json").read_text())["transforms"][-1][
            "config"
        ]["w_bits"]
        == 6
    )


def test_a_killed_run_keeps_its_finished_stages(tmp_path):
    """Stage 2 interrupted: stage 1 stays recorded; --resume reuses it and runs stage 2 as
    'resuming'."""
    from accel.compress import Recipe, StageSpec
    from accel.compress.chain import ChainStage, run_stages

    calls = []

    def writer(name, fail=False):
        def run(source, output, resume):
            calls.append((name, resume))
            if fail:
                raise KeyboardInterrupt
            output.mkdir()
            (output / "accel.json").write_text(f"{name} from {Path(str(source)).name}")

        return run

    specs = [StageSpec(1, "prune", {"ratio": 0.3}), StageSpec(2, "distill", {"steps": 4})]
    recipe = Recipe("r", "", tuple(specs))
    out = tmp_path / "out"
    out.mkdir()
    chain = dict(
        name="m", fingerprint="fingerprint", recipe=recipe, resume=False, seed=0, log=print
    )
    with pytest.raises(KeyboardInterrupt):
        stages = [ChainStage(specs[0], writer("a")), ChainStage(specs[1], writer("b", fail=True))]
        run_stages("m", stages, out, **chain)
    state = json.loads((out / "compress.json").read_text())
    assert len(state["done"]) == 1 and state["running"]["index"] == 1
    stages = [ChainStage(specs[0], writer("a")), ChainStage(specs[1], writer("b"))]
    runs = run_stages("m", stages, out, **{**chain, "resume": True})
    # stage 1 not run again; stage 2 resumed in place
    assert calls == [("a", False), ("b", False), ("b", True)]
    assert [r.reused for r in runs] == [True, False]
    assert (out / "stages" / "02-distill" / "accel.json").read_text() == "b from 01-prune"


def test_a_changed_input_model_has_another_fingerprint():
    """The first stage's key hashes the model's weights: the same model twice matches, a changed
    weight does not."""
    import torch

    import accel
    from accel.compress.chain import model_fingerprint

    model, again = accel.load("digits"), accel.load("digits")
    assert model_fingerprint(model) == model_fingerprint(again)
    with torch.no_grad():
        next(again.module.parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(model) != model_fingerprint(again)


def test_evaluate_many_gives_what_pairwise_evaluations_give():
    import accel
    from accel.evaluate import evaluate_many

    config = accel.EvalConfig(n=8, batch_size=8, latency_repeats=1)
    original = accel.load("digits", "cpu", {"steps": 4})
    fewer = accel.load("digits", "cpu", {"steps": 2})
    pruned_like = accel.load("digits", "cpu", {"steps": 3})
    many = evaluate_many([original, fewer, pruned_like], config)
    pair = accel.evaluate(pruned_like, baseline=original, config=config)
    assert many[1].report.compressed.fid == pair.report.compressed.fid
    assert many[1].report.original.fid == pair.report.original.fid == many[0].report.original.fid
    assert many[1].report.delta.psnr_db_vs_original == pair.report.delta.psnr_db_vs_original
    assert many[0].report.compressed.calls_per_image == 2


def test_a_builtin_recipe_runs_the_variant_for_the_model_kind():
    from accel.compress import load_recipe

    assert load_recipe("fast", "dit").name == "dit-fast"
    assert load_recipe("training-free", "dit").name == "dit-training-free"
    assert load_recipe("fast", "unet").name == "fast"
    assert load_recipe("quick", "dit").name == "quick"  # no DiT variant: the recipe itself


@pytest.mark.slow
def test_the_command_line_starts_the_chain_from_the_sampler_its_flags_give(capsys, tmp_path):
    """--guidance (and the other sampler flags) set the original's sampler, which every stage is
    measured with: a guided DiT against its guided students."""
    from conftest import make_tiny_dit

    make_tiny_dit().save_pretrained(tmp_path / "dit")
    recipe = recipe_file(tmp_path, '[[stage]]\nname = "export"\nformat = "onnx"\n')
    code, out, err = run(
        capsys,
        *("compress", "--model", str(tmp_path / "dit"), "--recipe", recipe),
        *("--guidance", "2", "--steps", "3", "--n", "4", "--batch-size", "4"),
        *("--out", str(tmp_path / "run"), "--json"),
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["original"]["sampler"]["guidance"] == 2.0
    assert report["original"]["calls_per_image"] == 6  # 3 steps x (conditional + unconditional)
    assert report["compressed"]["sampler"]["guidance"] == 2.0


def test_builtin_recipes_parse_and_pass_the_checks_done_before_work(capsys):
    import accel
    from accel.compress import builtin_recipes, load_recipe
    from accel.compress.workflow import plan

    assert {"quick", "fast", "training-free"} <= set(builtin_recipes())
    digits = accel.load("digits")
    for name in builtin_recipes():
        recipe = load_recipe(name)
        assert recipe.description and len(plan(recipe, digits, 0, "cpu", 500, False)) == len(
            recipe.stages
        )
    code, out, _ = run(capsys, "compress", "--list-recipes", "--json")
    assert code == 0 and {r["name"] for r in json.loads(out)["recipes"]} == set(builtin_recipes())


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[[stage]]\nname = 'prune'\nratoi = 0.3\n", "stage 1 (prune): unknown key 'ratoi'"),
        ("[[stage]]\nname = 'shrink'\n", "stage 1 has name 'shrink'"),
        (
            "[[stage]]\nname = 'prune'\nratio = 'lots'\n",
            "stage 1 (prune): key 'ratio' must be float, got 'lots'",
        ),
        (
            "[[stage]]\nname = 'prune'\nratio = 1.5\n",
            "stage 1 (prune): key 'ratio' must be between 0 and 1",
        ),
        (
            "[[stage]]\nname = 'quantize'\nbits = 9\n",
            "stage 1 (quantize): key 'bits' must be between 2 and 8",
        ),
        (
            "[[stage]]\nname = 'quantize'\nbits = 8\nw_bits = 6\n",
            "stage 1 (quantize): key 'w-bits' sets quant.w_bits, which another key sets too",
        ),
        ("[[stage]]\nname = 'cache'\nn = 100\n", "stage 1 (cache): key 'n' is not a stage setting"),
        (
            "[[stage]]\nname = 'quantize'\nno-split = 1\n",
            "stage 1 (quantize): key 'no-split' is a switch",
        ),
        ("[[stage]]\nname = 'export'\n", "stage 1 (export): key 'format' is needed: onnx or trt"),
        (
            "[[stage]]\nname = 'quantize'\nbits = 8\n[[stage]]\nname = 'prune'\n",
            "stage 2 (prune): cannot prune this model: it went through quantize",
        ),
        (
            "[[stage]]\nname = 'quantize'\nbits = 8\n[[stage]]\nname = 'distill'\n",
            "stage 2 (distill): cannot distill this model: it went through quantize",
        ),
        (
            "[[stage]]\nname = 'export'\nformat = 'onnx'\n[[stage]]\nname = 'cache'\n",
            "stage 2 (cache): cannot cache",
        ),
        ("stage = 3\n", "needs at least one [[stage]]"),
        ("[[stage]]\nname = 'prune'\nratio = 0.3\nratio_x = 1\n", "unknown key 'ratio-x'"),
        ("steps = [[\n", "is not valid TOML"),
        ("recipe = 1\n[[stage]]\nname = 'prune'\n", "unknown key 'recipe'"),
    ],
)
def test_bad_recipes_are_refused_before_any_work(capsys, tmp_path, text, expected):
    path = recipe_file(tmp_path, text)
    line = refused(capsys, tmp_path, "compress", "--recipe", path, "--out", str(tmp_path / "out"))
    assert expected in line, line


def test_bad_json_recipe_missing_file_and_no_recipe(capsys, tmp_path):
    path = recipe_file(tmp_path, '{"stage": [', "r.json")
    assert "is not valid JSON" in refused(
        capsys, tmp_path, "compress", "--recipe", path, "--out", str(tmp_path / "o")
    )
    assert "neither a built-in recipe" in refused(
        capsys,
        tmp_path,
        "compress",
        "--recipe",
        str(tmp_path / "no.toml"),
        "--out",
        str(tmp_path / "o"),
    )
    assert "pass --recipe" in refused(capsys, tmp_path, "compress", "--out", str(tmp_path / "o"))


def test_resume_into_another_run_is_refused_naming_what_differs(
    chain, capsys, tmp_path, tiny_unet_dir
):
    _, out = chain
    before = sorted(p.name for p in out.iterdir())
    other_recipe = recipe_file(tmp_path, SMALL.replace("interval = 2", "interval = 3"))
    line = refused(
        capsys,
        tmp_path,
        "compress",
        "--recipe",
        other_recipe,
        "--model",
        "digits",
        "--out",
        str(out),
        "--resume",
    )
    assert (
        "made by another recipe: stage 1 (cache) key 'interval' was 2 there and is 3 here" in line
    )
    assert sorted(p.name for p in out.iterdir()) == before
    line = refused(
        capsys,
        tmp_path,
        "compress",
        "--recipe",
        recipe_file(tmp_path, SMALL),
        "--model",
        str(tiny_unet_dir),
        "--out",
        str(out),
        "--resume",
    )
    assert "was made from another model" in line
    not_a_run = tmp_path / "artifact"
    not_a_run.mkdir()
    (not_a_run / "x").write_text("")
    line = refused(
        capsys,
        tmp_path,
        "compress",
        "--recipe",
        recipe_file(tmp_path, SMALL),
        "--out",
        str(not_a_run),
        "--resume",
    )
    assert "is not the output of accel compress" in line
    line = refused(
        capsys,
        tmp_path,
        "compress",
        "--recipe",
        recipe_file(tmp_path, SMALL),
        "--out",
        str(not_a_run),
    )
    assert "exists and is not empty" in line


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)
def test_a_trt_stage_without_tensorrt_is_refused_before_any_work(capsys, tmp_path):
    path = recipe_file(
        tmp_path, "[[stage]]\nname = 'cache'\n[[stage]]\nname = 'export'\nformat = 'trt'\n"
    )
    line = refused(capsys, tmp_path, "compress", "--recipe", path, "--out", str(tmp_path / "out"))
    assert "stage 2 (export): TensorRT is not installed" in line


@pytest.mark.gpu
def test_a_trt_stage_builds_the_engine_and_samples_through_it(capsys, tmp_path):
    pytest.importorskip("tensorrt")
    path = recipe_file(tmp_path, "[[stage]]\nname = 'export'\nformat = 'trt'\n")
    code, out, err = run(
        capsys, "compress", "--recipe", path, *QUICK, "--out", str(tmp_path / "out"), "--json"
    )
    assert code == 0, err
    final = json.loads(out)["stages"][-1]
    assert final["runtime"].startswith("TensorRT") and (tmp_path / "out" / "model.plan").is_file()


@pytest.mark.slow
def test_two_processes_train_together_and_share_the_final_evaluation(tmp_path):
    """Under torch.distributed.run (as `accelerate launch` runs it): the prune stage fine-tunes on
    both processes, the main one runs the others and writes OUT, the final evaluation splits its
    batches, and its numbers are those one process measures of the same models."""
    from test_eval_processes import run_eval

    recipe = recipe_file(
        tmp_path,
        "[[stage]]\nname = 'prune'\nratio = 0.3\nfinetune-steps = 4\ntrain-batch = 8\n"
        "importance-batch = 8\n[[stage]]\nname = 'export'\nformat = 'onnx'\n",
    )
    out = tmp_path / "out"
    report = run_eval(
        2,
        [
            "compress",
            "--recipe",
            recipe,
            "--n",
            "24",
            "--batch-size",
            "5",
            *FEW_STEPS,
            "--device",
            "cpu",
            "--out",
            str(out),
            "--json",
        ],
    )
    rows = report["stages"]
    assert [r["stage"] for r in rows] == ["original", "original, exported", "01-prune", "02-export"]
    assert (
        json.loads((out / "stages" / "01-prune" / "accel.json").read_text())["transforms"][-1][
            "finetune"
        ]["processes"]
        == 2
    )
    alone = run_eval(
        1,
        [
            "eval",
            "--model",
            str(out / "model.onnx"),
            "--baseline",
            "digits",
            "--n",
            "24",
            "--batch-size",
            "5",
            *FEW_STEPS,
            "--baseline-steps",
            FEW_STEPS[1],
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert (
        rows[0]["fid"] == alone["original"]["fid"] and rows[-1]["fid"] == alone["compressed"]["fid"]
    )
    assert rows[-1]["psnr_db"] == alone["delta"]["psnr_db_vs_original"]


@pytest.mark.slow
def test_python_and_the_command_line_make_the_same_models_and_fids(tmp_path, capsys):
    """``accel.compress(accel.load("digits"), recipe)`` and ``accel compress --recipe recipe``, same
    seed: every stage's weights bit for bit, the final graph's initializers, and every FID of the
    report. The recipe has the stages of the built-in ``quick`` with a few training steps (the
    built-in's 300 took 20 minutes of CI on a 2-core AMD EPYC, twice)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    import accel

    recipe = recipe_file(tmp_path, TRAINING_CHAIN)
    code, out, err = run(
        capsys,
        "compress",
        "--recipe",
        recipe,
        "--n",
        "32",
        "--batch-size",
        "32",
        *FEW_STEPS,
        "--out",
        str(tmp_path / "cli"),
        "--json",
    )
    assert code == 0, err
    from_cli = json.loads(out)
    result = accel.compress(
        accel.load("digits", sampling={"steps": int(FEW_STEPS[1])}),
        recipe,
        tmp_path / "py",
        eval_config=accel.EvalConfig(n=32, batch_size=32),
        progress=False,
    )
    for stage in ("01-prune", "02-cache", "03-quantize"):
        records = [
            json.loads((tmp_path / run_ / "stages" / stage / "accel.json").read_text())
            for run_ in ("cli", "py")
        ]
        assert records[0]["weights_sha256"] == records[1]["weights_sha256"], stage
    graphs = [
        onnx.load(str(tmp_path / run_ / "model.onnx")).graph.initializer for run_ in ("cli", "py")
    ]
    assert len(graphs[0]) == len(graphs[1]) > 0
    for a, b in zip(*graphs):
        assert a.name == b.name and np.array_equal(
            numpy_helper.to_array(a), numpy_helper.to_array(b)
        ), a.name
    assert [row["fid"] for row in from_cli["stages"]] == [
        row["fid"] for row in result.report.sections["stages"]
    ]
    assert result.final == tmp_path / "py" / "model.onnx" and result.model.runtime.startswith(
        "ONNX Runtime"
    )
