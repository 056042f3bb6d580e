"""Prompts as conditioning (``--prompts``, accel.models.prompts): a text file through a pipeline
folder's own text encoder, or stored states for a model without one; kept in the artifact, shared
with the model it is compared to, and refused in one line where they cannot apply."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import accel
from accel.core.errors import AccelError
from accel.core.hooks import StepHook
from accel.distillation.apply import check_distillable
from accel.distillation.config import DistillConfig
from accel.models.architectures import architecture
from accel.models.prompts import stored_states
from conftest import make_tiny_text_unet, refused

DIVISOR = 8


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    pytest.importorskip("transformers")
    from accel.models.architectures.pipeline import write_sd15_pipeline

    # 16x16 latents: the guided test samples it four times (at 64x64 it took 100 s of CI)
    folder = tmp_path_factory.mktemp("pipe") / "sd15"
    return write_sd15_pipeline(folder, width_divisor=DIVISOR, resolution_divisor=4)


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a photo of a cat\n\nan astronaut riding a horse\na red car\n")
    return path


@pytest.mark.slow
def test_prompts_go_through_the_pipelines_text_encoder_and_condition_every_sample(
    pipeline, prompts
):
    model = accel.load(pipeline, prompts=prompts)
    states = model.text_states
    assert tuple(states.shape) == (3, 77, 768 // DIVISOR)  # blank lines are not prompts
    assert not torch.allclose(states[0], states[1])  # the encoder read different text
    cond = model.default_cond(5, torch.Generator().manual_seed(0))
    # cycled from a seeded first prompt: each row one prompt's states, every prompt used
    matches = [[torch.equal(row, s) for s in states].index(True) for row in cond]
    assert sorted(set(matches)) == [0, 1, 2]
    assert [(b - a) % 3 for a, b in zip(matches, matches[1:])] == [1, 1, 1, 1]


def test_an_artifact_keeps_its_prompts_and_the_model_it_is_compared_with_shares_them(tmp_path):
    model = accel.load(make_tiny_text_unet(), sampling={"steps": 2})
    model.use_text_states(torch.randn(3, 7, 16))
    accel.save(model, tmp_path / "artifact")
    again = accel.load(tmp_path / "artifact", sampling={"steps": 2})
    assert torch.equal(again.text_states, model.text_states)
    plain = accel.load(make_tiny_text_unet(), sampling={"steps": 2})
    quick = accel.EvalConfig(n=2, batch_size=2, latency_repeats=1)
    evaluation = accel.evaluate(again, plain, quick)
    assert torch.equal(plain.text_states, again.text_states)
    # the same prompts and noise: the same network draws the same images
    assert evaluation.report.delta.psnr_db_vs_original > 60


def test_stored_states_condition_a_model_without_a_text_encoder(tmp_path):
    model = accel.load(make_tiny_text_unet())
    states = torch.randn(2, 7, 16)
    save_file({"text_states": states}, str(tmp_path / "states.safetensors"))
    model.use_text_states(stored_states(tmp_path / "states.safetensors")[0])
    x, t, cond = model.example_inputs(3)
    assert all(any(torch.equal(row, s) for s in states) for row in cond)
    assert model(x, t, cond).shape == x.shape


def test_states_of_the_wrong_width_are_refused_naming_the_cross_attention_width():
    model = accel.load(make_tiny_text_unet())
    with pytest.raises(AccelError, match=r"attends to prompts x tokens x 16"):
        model.use_text_states(torch.zeros(2, 77, 768))


def _write(path, content: bytes):
    path.write_bytes(content)
    return str(path)


@pytest.mark.slow
def test_bad_prompts_are_refused_in_one_line_with_nothing_written(
    capsys, tmp_path, pipeline, prompts
):
    files = tmp_path / "inputs"
    files.mkdir()
    out = ["--steps", "1", "--n", "2", "--calib-samples", "1", "--out", str(tmp_path / "written")]
    quantize = ["quantize", "--bits", "8", "--recon-iters", "0", *out]
    cases = {
        "holds no prompt": _write(files / "empty.txt", b"\n  \n"),
        "is not UTF-8 text": _write(files / "binary.txt", b"\xff\xfe\x00\x89PNG"),
        "no 'text_states' tensor": str(files / "other.safetensors"),
        "attends to prompts x tokens x 96": str(files / "wide.safetensors"),
    }
    save_file({"weights": torch.zeros(1)}, cases["no 'text_states' tensor"])
    save_file({"text_states": torch.zeros(1, 77, 768)}, cases["attends to prompts x tokens x 96"])
    for expected, path in cases.items():
        line = refused(capsys, tmp_path, *quantize, "--model", str(pipeline), "--prompts", path)
        assert expected in line
    line = refused(capsys, tmp_path, *quantize, "--model", "digits", "--prompts", str(prompts))
    assert "is not text-conditioned" in line
    # a text file for a network without its pipeline: no encoder to read it with
    unet = architecture("sd15-unet").save(files / "bare-unet", width_divisor=DIVISOR)
    line = refused(capsys, tmp_path, "info", "--model", str(unet), "--prompts", str(prompts))
    assert "not inside a pipeline folder with a text encoder" in line


def test_a_pipeline_folder_without_a_denoiser_is_refused_in_one_line(capsys, tmp_path):
    folder = tmp_path / "pipe"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    line = refused(capsys, tmp_path, "info", "--model", str(folder))
    assert "pipeline folder without a denoiser" in line


class CondRecorder(StepHook):
    """Keeps the conditioning of every call."""

    def __init__(self):
        self.conds = []

    def pre_forward(self, call):
        self.conds.append(call.cond)
        return call


@pytest.mark.slow
def test_guidance_runs_the_empty_prompts_states_as_the_unconditional_half(
    pipeline, prompts, tmp_path
):
    from accel.models.prompts import encode_prompts

    model = accel.load(pipeline, prompts=prompts, sampling={"steps": 2, "guidance": 7.5})
    empty = encode_prompts(pipeline, [""])[0]  # the pipeline's negative prompt ""
    assert torch.allclose(model.null_text_states, empty, atol=1e-5)
    recorder = CondRecorder()
    model.add_hook("record", recorder)
    guided = accel.sample(model, 2, progress=False)
    model.remove_hook("record")
    assert guided.calls_per_image == 4  # 2 steps x (conditional + unconditional), one call each
    cond = recorder.conds[0]
    assert all(any(torch.equal(row, s) for s in model.text_states) for row in cond[:2])
    assert all(torch.equal(row, model.null_text_states) for row in cond[2:])
    unguided = accel.sample(
        model, 2, spec=model.sampling.changed({"guidance": 1.0}), progress=False
    )
    assert not torch.allclose(guided.images, unguided.images, atol=1e-3)
    # the artifact keeps the empty prompt's states: reloaded, it draws the same guided samples
    accel.save(model, tmp_path / "artifact")
    again = accel.load(tmp_path / "artifact")
    assert torch.equal(again.null_text_states, model.null_text_states)
    assert torch.equal(accel.sample(again, 2, progress=False).images, guided.images)


def test_guidance_needs_the_empty_prompts_states_and_an_embeddings_file_can_give_them(tmp_path):
    states, null = torch.randn(2, 7, 16), torch.randn(7, 16)
    without, given = tmp_path / "states.safetensors", tmp_path / "with-null.safetensors"
    save_file({"text_states": states}, str(without))
    save_file({"text_states": states, "null_text_states": null}, str(given))
    guided = {"steps": 2, "guidance": 3.0}
    with pytest.raises(AccelError, match="needs the empty prompt's text states"):
        accel.load(make_tiny_text_unet(), prompts=without, sampling=guided)
    model = accel.load(make_tiny_text_unet(), prompts=given, sampling=guided)
    assert torch.equal(model.null_text_states, null)
    assert accel.sample(model, 2, progress=False).calls_per_image == 4
    with pytest.raises(AccelError, match="the empty prompt's states are"):
        model.use_text_states(states, null=torch.randn(5, 16))
    # guided distillation trains with a null class; a text teacher has none yet
    with pytest.raises(AccelError, match="teacher guidance needs a teacher with a null class"):
        check_distillable(model, DistillConfig())


def test_other_prompts_are_another_calibration_set_and_another_chain_input():
    from accel.calib.collect import model_fingerprint as calibration_key
    from accel.compress.chain import model_fingerprint as chain_key

    model = accel.load(make_tiny_text_unet())
    before = calibration_key(model), chain_key(model)
    model.use_text_states(torch.randn(2, 7, 16))
    prompted = calibration_key(model), chain_key(model)
    model.use_text_states(model.text_states, null=torch.randn(7, 16))
    guided = calibration_key(model), chain_key(model)
    assert (
        len({before, prompted, guided}) == 3
        and len({k[0] for k in (before, prompted, guided)}) == 3
    )
