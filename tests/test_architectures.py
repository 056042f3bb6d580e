"""The real-size architectures (accel/models/architectures): built from the published
configurations, they have the published parameter counts; narrowed for CI, they keep the structure
and load, run and go back into a diffusers pipeline."""

from __future__ import annotations

import diffusers
import pytest
import torch
from accelerate import init_empty_weights

import accel
from accel.core.errors import ConfigError
from accel.models.architectures import NAMES, architecture

DIVISOR = 8  # CI's widths: 1/8 of every channel count and head dimension


def _parameters(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def _full_size(name: str) -> torch.nn.Module:
    """The network at its real size without allocating its weights."""
    spec = architecture(name)
    with init_empty_weights():
        return getattr(diffusers, spec.network_class).from_config(spec.network_config())


def test_every_architecture_is_listed():
    assert NAMES == ("dit-xl-2", "pixart-alpha-512", "sd15-unet")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd15-unet", "pixart-alpha-512"])
def test_the_published_configurations_give_the_published_parameter_counts(name):
    assert _parameters(_full_size(name)) == architecture(name).published_parameters


def test_dit_xl_2_has_the_papers_675m_parameters_once_its_per_block_embeddings_count_once():
    network = _full_size("dit-xl-2")
    copies = network.transformer_blocks[1:]
    duplicated = sum(_parameters(block.norm1.emb) for block in copies)
    assert duplicated == 27 * 2_777_472
    distinct = _parameters(network) - duplicated
    assert distinct == pytest.approx(architecture("dit-xl-2").published_parameters, rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "kind", "cond_kind", "cond_shape"),
    [
        ("sd15-unet", "unet-text", "text", (2, 77, 768 // DIVISOR)),
        ("dit-xl-2", "dit", "class", (2,)),
        ("pixart-alpha-512", "dit-text", "text", (2, 120, 4096 // DIVISOR)),
    ],
)
def test_a_narrowed_architecture_saves_as_a_diffusers_folder_that_accel_loads_and_runs(
    tmp_path, name, kind, cond_kind, cond_shape
):
    spec = architecture(name)
    folder = spec.save(tmp_path / name, width_divisor=DIVISOR)
    model = accel.load(folder)
    assert (model.kind, model.cond_kind) == (kind, cond_kind)
    assert model.scheduler_config["_class_name"] == spec.scheduler["_class_name"]
    # native resolution, every width divided: DIVISOR^2 fewer parameters in the square weights,
    # DIVISOR fewer in the class and embedding tables
    assert model.sample_shape[1] == spec.network["sample_size"]
    assert _parameters(model.module) < spec.published_parameters / DIVISOR
    x, t, cond = model.example_inputs(2)
    assert tuple(cond.shape) == cond_shape
    with torch.no_grad():
        eps = model(x, t, cond)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    assert eps.std() > 0.01  # a random network, not a zero-initialised one: its output varies


def test_the_same_seed_builds_the_same_network_and_another_seed_another():
    spec = architecture("dit-xl-2")
    first, again = (spec.build(DIVISOR, seed=0).state_dict() for _ in range(2))
    other = spec.build(DIVISOR, seed=1).state_dict()
    name = "pos_embed.proj.weight"
    assert torch.equal(first[name], again[name])
    assert not torch.equal(first[name], other[name])


def test_a_width_divisor_that_does_not_divide_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="does not divide attention_head_dim = 72"):
        architecture("dit-xl-2").build(width_divisor=5)
    with pytest.raises(ConfigError, match="must be one of"):
        architecture("sd-xl")


@pytest.mark.slow
def test_the_sd15_pipeline_folder_runs_in_diffusers_and_takes_the_unet_back(tmp_path):
    pytest.importorskip("transformers")
    from accel.models.architectures.pipeline import write_sd15_pipeline

    folder = write_sd15_pipeline(tmp_path / "sd15", width_divisor=DIVISOR)
    model = accel.load(folder)  # the pipeline folder: its unet/ and scheduler/
    assert model.kind == "unet-text"
    assert model.scheduler_config["_class_name"] == "PNDMScheduler"
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder)
    tokens = pipe.tokenizer("a 7").input_ids
    assert len(tokens) == 4  # start, "a" ending a word, "7" ending one, end: one per character
    pipe.unet = model.module  # what accel returns goes back into the user's pipeline
    images = pipe("a seven", num_inference_steps=2, height=64, width=64, output_type="np").images
    assert images.shape == (1, 64, 64, 3) and images.std() > 0


@pytest.mark.slow
def test_pixart_exports_to_onnx_that_onnx_runtime_runs(tmp_path):
    from accel.export.onnx import export_onnx

    folder = architecture("pixart-alpha-512").save(
        tmp_path / "pixart", width_divisor=DIVISOR, resolution_divisor=4
    )
    record = export_onnx(accel.load(folder), tmp_path / "pixart.onnx")
    # the tracer's If around the output's squeeze(1) is resolved: ONNX Runtime refused it
    assert "If" not in record["ops"]
    assert record["parity"]["met"] and record["parity"]["max_rel"] < 1e-4
