import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import accel
from accel.metrics.latency import step_latency_ms
from accel.metrics.quality import fid_setup, psnr_db
from accel.metrics.size import count_macs, count_params, weights_bytes


class TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 3, 1)

    def forward(self, x, t):
        return self.b(torch.relu(self.a(x)))


def test_macs_are_counted_per_sample():
    denoiser = accel.Denoiser(TwoConvs(), {}, sample_shape=(3, 8, 8))
    # 3x3 conv: 64 positions x 8 out x 3 in x 9 taps; 1x1 conv: 64 x 3 x 8.
    assert count_macs(denoiser) == 64 * 8 * 3 * 9 + 64 * 3 * 8
    assert count_params(denoiser) == (8 * 3 * 9 + 8) + (3 * 8 + 3)


def test_macs_include_attention_and_linear_layers(tiny_unet):
    denoiser = accel.load(tiny_unet)
    conv_macs = []
    hooks = [
        m.register_forward_hook(
            lambda mod, i, o: conv_macs.append(
                o[0].numel()
                * mod.in_channels
                // mod.groups
                * mod.kernel_size[0]
                * mod.kernel_size[1]
            )
        )
        for m in tiny_unet.modules()
        if isinstance(m, nn.Conv2d)
    ]
    total = count_macs(denoiser)
    for hook in hooks:
        hook.remove()
    assert total > sum(conv_macs) > 0  # convolutions plus the attention and time-embedding matmuls


def test_weights_bytes_from_disk_or_serialised(tiny_unet, tiny_unet_dir):
    on_disk = accel.load(tiny_unet_dir)
    in_memory = accel.load(tiny_unet)
    assert (
        weights_bytes(on_disk)
        == (tiny_unet_dir / "diffusion_pytorch_model.safetensors").stat().st_size
    )
    # same tensors, header may differ
    assert abs(weights_bytes(in_memory) - weights_bytes(on_disk)) < 4096
    assert weights_bytes(in_memory) > 4 * count_params(in_memory)


class Logging(accel.StepHook):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def pre_forward(self, call):
        self.log.append(self.name)
        return call


def test_latency_times_models_interleaved_after_warm_up():
    """No timing is asserted (this machine's speed is not a test); what is checked is the protocol:
    warm-up calls, then A, B, A, B, ... so a slow moment of the machine hits both alike."""
    log: list[str] = []
    models = [accel.Denoiser(TwoConvs(), {}, sample_shape=(3, 8, 8)) for _ in range(2)]
    for name, model in zip("AB", models):
        model.add_hook("log", Logging(name, log))
    latencies = step_latency_ms(models, batch_size=4, warmup=2, repeats=3)
    assert len(latencies) == 2 and all(ms > 0 for ms in latencies)
    assert log == ["A", "B"] * (2 + 3)


def test_psnr():
    a = np.zeros((2, 1, 4, 4), dtype=np.uint8)
    assert psnr_db(a, a) == math.inf
    b = a.copy()
    b[..., 0] = 255  # a quarter of the pixels off by the full range
    assert psnr_db(a, b) == pytest.approx(10 * math.log10(4))


def test_fid_setup_chooses_digits_features_or_says_why_not():
    digits = fid_setup((1, 16, 16))
    assert digits.name == "digits-cnn" and digits.real.floor > 0 and digits.real.stats.count == 1797
    other = fid_setup((3, 32, 32))
    assert other.features is None and "--inception-weights" in other.unavailable_reason
    assert other.scores(np.zeros((4, 3, 32, 32), dtype=np.uint8)) == {
        "fid": None,
        "fid_at_floor_size": None,
    }


def test_inception_fid_needs_reference_images(tmp_path):
    from accel.core.errors import AccelError

    with pytest.raises(AccelError, match="EvalConfig.fid_ref is needed"):
        fid_setup((3, 32, 32), inception_weights=tmp_path / "w.pth")


def test_attention_macs_are_counted_whichever_kernel_runs_it():
    """The default processor runs fused SDPA; the classic one runs explicit batched matmuls: same
    MACs."""
    from diffusers.models.attention_processor import Attention, AttnProcessor

    fused = accel.load("digits")
    explicit = accel.load("digits")
    for module in explicit.modules():
        if isinstance(module, Attention):
            module.set_processor(AttnProcessor())
    assert count_macs(fused) == count_macs(explicit)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as plain, torch.no_grad():
        fused(*fused.example_inputs(1))
    # digits has 3 attention layers at 8x8 (64 tokens x 48 ch) and 4 at 4x4 (16 x 96); Q.K^T and P.V
    # each
    attention = 2 * (3 * 64 * 64 * 48 + 4 * 16 * 16 * 96)
    assert count_macs(fused) - plain.get_total_flops() // 2 == attention
