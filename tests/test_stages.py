"""Stages as library objects: one table of keys for recipes, Python and the command line; defaults
and choices from the configs; one error naming the field, worded by whoever reads it; the whole
chain from Python."""

import pytest

import accel
from accel.cli.transform import COMMANDS as STAGE_COMMANDS
from accel.core import stages
from conftest import refused
from conftest import run_cli as run


def _flags(command) -> set[str]:
    """The flags a command's parser defines, read from its --help (what a user sees)."""
    import re

    from accel.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()) as text:
            parser.parse_args([command, "--help"])
    return set(re.findall(r"--([a-z][a-z0-9-]*)", text.getvalue()))


@pytest.mark.parametrize("command", STAGE_COMMANDS, ids=lambda c: c.name)
def test_every_spelling_is_a_flag_and_every_stage_flag_a_key(command):
    stage, flags = stages.get(command.name), _flags(command.name)
    keys = set(stage.all_keys())
    # a spelling without its flag is a recipe-only key
    assert set(stage.keys) <= flags, set(stage.keys) - flags
    shared = {
        "model",
        "prompts",  # the model's conditioning: every command that runs a model takes it
        "device",
        "seed",
        "json",
        "n",
        "batch-size",
        "latency-batch",
        "inception-weights",
        "fid-ref",
        "out",
        "overwrite",
        "resume",
        "ablation",
        "help",
    }
    # a flag that is no key would not reach the stage
    assert flags - shared <= keys, flags - shared - keys


def test_a_field_name_and_its_flag_spelling_are_one_key():
    assert (
        accel.stage_settings("quantize", bits=8).to_dict()
        == accel.stage_settings("quantize", w_bits=8).to_dict()
    )
    assert (
        accel.stage_settings("prune", {"finetune-steps": 7}).to_dict()
        == accel.stage_settings("prune", finetune_steps=7).to_dict()
    )
    assert accel.stage_settings("quantize", {"act-bits": 0})["quant"].a_bits is None  # weight-only
    assert (
        accel.stage_settings("quantize", range="minmax")["quant"].a_range == "minmax"
    )  # one key, two fields
    with pytest.raises(
        accel.AccelError, match="quantize.w-bits sets quant.w_bits, which another key sets too"
    ):
        accel.stage_settings("quantize", bits=8, w_bits=6)


def test_attention_quantization_is_switched_on_or_off_from_the_command_line(capsys, tmp_path):
    assert accel.stage_settings("quantize", attention=True)["quant"].attention_quantized
    assert not accel.stage_settings("quantize", bits=4, no_attention=True)[
        "quant"
    ].attention_quantized
    err = refused(
        capsys, tmp_path, "quantize", "--attention", "--no-attention", "--out", str(tmp_path / "q")
    )
    assert "sets quant.quantize_attention, which another key sets too" in err
    assert not (tmp_path / "q").exists()


def test_defaults_and_choices_come_from_the_configs(capsys):
    from accel.prune.config import FINETUNE
    from accel.quant.config import RECON_ITERS, STAGE_DEFAULT

    code, text, _ = run(capsys, "quantize", "--help")
    assert code == 0
    expected = f"(default {RECON_ITERS}; given alone, it implies adaround)"
    assert expected in " ".join(text.split())
    assert accel.stage_settings("quantize")["quant"] == STAGE_DEFAULT
    assert accel.stage_settings("prune")["train"].steps == FINETUNE.steps  # the budget's
    assert accel.stage_settings("prune")["finetune"].steps == FINETUNE.steps
    code, text, _ = run(capsys, "prune", "--help")
    assert "{random,magnitude,taylor,diff-pruning}" in text  # PruneConfig's one_of


def test_the_training_budget_follows_the_distillation_method():
    from accel.distillation.config import CONSISTENCY, PROGRESSIVE

    assert accel.stage_settings("distill")["train"].steps == PROGRESSIVE.steps
    assert accel.stage_settings("distill", method="consistency")["train"].steps == CONSISTENCY.steps
    assert accel.stage_settings("distill", method="consistency", train_steps=5)["train"].steps == 5


def test_a_bad_value_is_named_in_the_words_of_whoever_reads_it(capsys, tmp_path):
    with pytest.raises(
        accel.ConfigError, match=r"QuantConfig.w_bits must be between 2 and 8, got 9"
    ):
        accel.stage_settings("quantize", bits=9)  # Python: the field
    err = refused(capsys, tmp_path, "quantize", "--bits", "9", "--out", str(tmp_path / "q"))
    # the command line: the flag
    assert "accel: error: --bits must be between 2 and 8, got 9" in err
    recipe = tmp_path / "r.toml"
    recipe.write_text("[[stage]]\nname = 'quantize'\nbits = 9\n")
    err = refused(
        capsys, tmp_path, "compress", "--recipe", str(recipe), "--out", str(tmp_path / "c")
    )
    # a recipe: its key
    assert "stage 1 (quantize): key 'bits' must be between 2 and 8, got 9" in err


def test_fields_named_in_a_message_become_flags_on_the_command_line(capsys, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    err = refused(capsys, tmp_path, "cache", "--out", str(tmp_path / "out"))
    assert "exists and is not empty; choose another --out, or pass --overwrite" in err
    with pytest.raises(accel.AccelError, match="choose another `out`, or pass `overwrite`"):
        accel.save(accel.load("digits"), tmp_path / "out")


def test_run_stage_returns_a_new_model_and_leaves_its_input_alone():
    digits = accel.load("digits")
    result = accel.run_stage("cache", digits, interval=2)
    assert result.record["name"] == "cache" and "cache" in result.model.hooks
    assert digits.hooks == {} and digits.transforms == []


@pytest.mark.slow
def test_a_recipe_from_a_python_dict_runs_without_an_output_folder():
    recipe = {
        "stages": [
            {"cache": {"interval": 2, "steps": 6}},
            {"quantize": {"bits": 8, "act_bits": 0, "recon_iters": 0, "calib_samples": 2}},
        ]
    }
    result = accel.compress(
        accel.load("digits"),
        recipe,
        eval_config=accel.EvalConfig(n=8, batch_size=8),
        progress=False,
    )
    assert result.out is None and result.final is None
    rows = result.report.sections["stages"]
    assert [row["stage"] for row in rows] == ["original", "01-cache", "02-quantize"]
    assert [t["name"] for t in result.model.transforms] == ["cache", "quantize"]
    # the stage table, in the report's markdown
    assert result.report.to_markdown().count("## Stages") == 1


def test_a_recipe_stage_given_as_anything_but_name_and_settings_is_refused():
    with pytest.raises(accel.AccelError, match="stage 1 must be {name: settings}"):
        accel.compress("digits", {"stages": [{"cache": {}, "quantize": {}}]})
    with pytest.raises(accel.AccelError, match="stage 1 has name 'shrink'"):
        accel.compress("digits", {"stages": [{"shrink": {}}]})
