"""Small random-weight diffusers models for tests: every supported architecture, built in
milliseconds."""

import logging
import os

import pytest
import torch

from accel.cli import IMPORT_NOISE

# as accel's CLI does: the tests build models through diffusers directly, and the one-line-error
# tests read stderr whole
for name in IMPORT_NOISE:
    logging.getLogger(name).setLevel(logging.ERROR)

if not torch.cuda.is_available():
    # Triton kernels run in Triton's CPU interpreter; it is chosen when a kernel is defined, so
    # before any import.
    os.environ.setdefault("TRITON_INTERPRET", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n auto` starts a worker per core: one thread each (and in the processes a test
    # starts), or the workers' thread pools fight over the cores (two 2-thread processes on 2 cores
    # ran ~10x slower)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, torch.get_num_threads()))


def make_tiny_unet(**overrides):
    from diffusers import UNet2DModel

    config = dict(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
    )
    config.update(overrides)
    torch.manual_seed(0)
    return UNet2DModel(**config).eval()


def make_tiny_text_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    ).eval()


def make_tiny_dit():
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    return DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
        norm_num_groups=4,
    ).eval()


def make_tiny_pixart():
    """PixArt-alpha's blocks (adaLN-single, cross-attention to projected text states), width 16."""
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(0)
    return PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        cross_attention_dim=16,
        caption_channels=12,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        activation_fn="gelu-approximate",
        attention_bias=True,
        num_embeds_ada_norm=1000,
        use_additional_conditions=False,
    ).eval()


@pytest.fixture
def tiny_unet():
    return make_tiny_unet()


@pytest.fixture
def tiny_unet_dir(tmp_path, tiny_unet):
    """A diffusers model folder: config.json + diffusion_pytorch_model.safetensors +
    scheduler_config.json."""
    from diffusers import DDPMScheduler

    folder = tmp_path / "tiny-unet"
    tiny_unet.save_pretrained(folder)
    DDPMScheduler(num_train_timesteps=100).save_config(folder)
    return folder


def tiny_calib(denoiser):
    """16 calibration inputs: every step of 4 four-step DDIM trajectories (whatever the model's own
    sampler)."""
    import copy

    import accel
    from accel.calib.collect import collect

    short = copy.copy(denoiser)  # the same network, another sampler
    short.sampling = accel.SamplingSpec(steps=4)
    return collect(short, accel.CalibConfig(samples=4, every=1), progress=False)


def run_cli(capsys, *argv):
    """Exit code, stdout and stderr of ``accel ARGV`` run in-process (argparse errors exit via
    SystemExit)."""
    from accel.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, tmp_path, *argv) -> str:
    """Run ``accel ARGV`` (with an output under tmp_path where the command writes); check the
    bad-input contract: exit 2, one line on stderr and nothing on stdout, no traceback, nothing
    written. Returns the line."""
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("accel: error: "), (
        err
    )
    assert "Traceback" not in err and sorted(p.name for p in tmp_path.iterdir()) == before
    return err
