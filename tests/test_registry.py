"""The transform registry: a new transform plugs in with one registration, and the order rules
hold."""

from dataclasses import dataclass

import pytest
import torch

import accel
from accel.core import registry
from accel.core.config import Config
from accel.core.errors import AccelError
from conftest import make_tiny_unet


@dataclass(frozen=True)
class ScaleConfig(Config):
    layer: str = "conv_out"
    factor: float = 2.0

    def validate(self) -> None:
        if self.factor == 0:
            raise self.invalid("factor", "must not be 0")


def scale(denoiser, config: ScaleConfig) -> dict:
    """Multiply one layer's weight by ``factor``: the whole transform (its weights are saved as they
    are)."""
    with torch.no_grad():
        denoiser.module.get_submodule(config.layer).weight.mul_(config.factor)
    return {"scaled": config.layer}


@pytest.fixture
def scale_transform(monkeypatch):
    """A transform registered the way a new capability registers (one call), unregistered after the
    test."""
    monkeypatch.setattr(registry, "_TRANSFORMS", dict(registry._TRANSFORMS))
    return registry.register(
        registry.Transform(name="scale", config=ScaleConfig, apply=scale, may_follow=())
    )


def test_a_new_transform_round_trips_through_save_and_load(tmp_path, scale_transform):
    original, model = accel.load(make_tiny_unet()), accel.load(make_tiny_unet())
    record = registry.apply(model, "scale", ScaleConfig(factor=3.0))
    assert record == {
        "name": "scale",
        "config": ScaleConfig(factor=3.0).to_dict(),
        "scaled": "conv_out",
    }
    x, t, _ = original.example_inputs(2)
    with torch.no_grad():
        assert not torch.allclose(model(x, t), original(x, t))  # it did something
        accel.save(model, tmp_path / "scaled")
        restored = accel.load(tmp_path / "scaled")
        assert torch.equal(restored(x, t), model(x, t))
    assert restored.transforms == [record]


def test_order_rules_refuse_before_any_work(scale_transform):
    quantized = accel.load(make_tiny_unet())
    accel.quantize_(
        quantized, accel.QuantConfig(a_bits=None, rounding="nearest"), None, progress=False
    )
    weights = quantized.module.conv_in.weight.clone()
    with pytest.raises(
        AccelError,
        match="cannot scale this model: it went through quantize, and scale may follow "
        "no other transform",
    ):
        registry.apply(quantized, "scale", ScaleConfig())
    assert torch.equal(quantized.module.conv_in.weight, weights) and len(quantized.transforms) == 1
    with pytest.raises(AccelError, match="takes a ScaleConfig"):
        registry.apply(accel.load(make_tiny_unet()), "scale", accel.W8A8)


def test_the_built_in_transforms_keep_the_chain_s_order():
    """prune -> distill -> cache -> quantize -> optimize -> export: nothing goes backwards, nothing
    repeats."""
    order = ["quantize", "optimize", "export"]
    for i, later in enumerate(order):
        transform = registry.get(later)
        assert all(transform.allows_after(earlier) for earlier in order[:i])
        assert not any(transform.allows_after(same_or_after) for same_or_after in order[i:])


def test_an_artifact_made_by_an_unknown_transform_is_refused_in_one_line(tmp_path, scale_transform):
    model = accel.load(make_tiny_unet())
    registry.apply(model, "scale", ScaleConfig())
    accel.save(model, tmp_path / "scaled")
    del registry._TRANSFORMS["scale"]  # an accel without that capability
    with pytest.raises(AccelError, match="'scale' is not a transform this accel knows"):
        accel.load(tmp_path / "scaled")


def test_file_loaders_come_from_the_registry():
    assert registry.file_loader(".onnx") is not None and registry.file_loader(".plan") is not None
    assert registry.file_loader(".pt") is None
