import pytest
import torch

import accel
from accel.errors import AccelError
from accel.sampling import SamplerConfig, initial_noise, sample

QUICK = SamplerConfig(steps=3, batch_size=4)


@pytest.fixture
def denoiser(tiny_unet_dir):
    return accel.load(tiny_unet_dir)


def test_same_seed_same_images_other_seed_other_images(denoiser):
    first = sample(denoiser, 6, seed=11, config=QUICK, progress=False).images
    again = sample(denoiser, 6, seed=11, config=QUICK, progress=False).images
    other = sample(denoiser, 6, seed=12, config=QUICK, progress=False).images
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 0.05
    assert first.shape == (6, 3, 8, 8) and first.min() >= -1 and first.max() <= 1


def test_image_noise_does_not_depend_on_batch_size(denoiser):
    assert torch.equal(initial_noise(denoiser, 10, 5)[:4], initial_noise(denoiser, 4, 5))
    small = sample(denoiser, 6, seed=3, config=SamplerConfig(steps=3, batch_size=2), progress=False).images
    whole = sample(denoiser, 6, seed=3, config=SamplerConfig(steps=3, batch_size=6), progress=False).images
    # Same noise; only float summation order differs between batch shapes.
    torch.testing.assert_close(small, whole, rtol=0, atol=1e-4)


def test_ddim_with_eta_zero_is_deterministic_given_noise_and_ddpm_adds_noise(denoiser):
    ddpm = SamplerConfig(name="ddpm", steps=3, batch_size=4)
    a = sample(denoiser, 4, seed=1, config=ddpm, progress=False).images
    b = sample(denoiser, 4, seed=1, config=ddpm, progress=False).images
    ddim = sample(denoiser, 4, seed=1, config=QUICK, progress=False).images
    assert torch.equal(a, b)
    assert not torch.allclose(a, ddim, atol=1e-3)


def test_sampler_follows_the_diffusers_ddim_update(denoiser):
    """One DDIM step from x_T by hand: x0 = (x - sqrt(1-a_t) eps) / sqrt(a_t), clipped; x_prev from x0, eps."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(denoiser.scheduler_config)
    scheduler.set_timesteps(1)
    t = scheduler.timesteps[0]
    x = initial_noise(denoiser, 2, 0)
    with torch.no_grad():
        eps = denoiser(x, t)
    alpha = scheduler.alphas_cumprod[t]
    x0 = ((x - (1 - alpha).sqrt() * eps) / alpha.sqrt()).clamp(-1, 1)
    alpha_prev = scheduler.final_alpha_cumprod
    expected = alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * eps
    got = sample(denoiser, 2, seed=0, config=SamplerConfig(steps=1), progress=False).images
    torch.testing.assert_close(got, expected.clamp(-1, 1), rtol=1e-5, atol=1e-5)


def test_conditional_models_sample_with_default_conditioning():
    from conftest import make_tiny_dit, make_tiny_text_unet

    for model in (make_tiny_dit(), make_tiny_text_unet()):
        images = sample(accel.load(model), 3, seed=0, config=QUICK, progress=False).images
        assert images.shape == (3, 4, 8, 8) and torch.isfinite(images).all()


@pytest.mark.parametrize("kwargs", [dict(name="euler"), dict(steps=0), dict(batch_size=0)])
def test_bad_sampler_settings(kwargs):
    with pytest.raises(AccelError):
        SamplerConfig(**kwargs)


def test_zero_samples_is_an_error(denoiser):
    with pytest.raises(AccelError, match="--n"):
        sample(denoiser, 0, config=QUICK, progress=False)


@pytest.mark.gpu
def test_cuda_sampling_matches_cpu_and_times_with_events(tiny_unet_dir):
    from accel.metrics.latency import step_latency_ms

    cpu = accel.load(tiny_unet_dir)
    gpu = accel.load(tiny_unet_dir, device="cuda")
    torch.backends.cudnn.allow_tf32 = False
    on_cpu = sample(cpu, 4, seed=2, config=QUICK, progress=False).images
    on_gpu = sample(gpu, 4, seed=2, config=QUICK, progress=False).images
    assert on_gpu.device.type == "cpu"
    torch.testing.assert_close(on_gpu, on_cpu, rtol=0, atol=1e-3)  # fp32 on two devices: rounding only
    assert step_latency_ms([gpu], batch_size=2, warmup=2, repeats=5)[0] > 0
