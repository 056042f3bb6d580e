import pytest
import torch

import accel
from accel.core.errors import AccelError, ConfigError
from accel.core.hooks import StepHook
from accel.sampling import initial_noise, sample, sample_batches
from conftest import make_tiny_dit, make_tiny_text_unet

QUICK = accel.SamplingSpec(steps=3)


@pytest.fixture
def denoiser(tiny_unet_dir):
    return accel.load(tiny_unet_dir)


def test_same_seed_same_images_other_seed_other_images(denoiser):
    first = sample(denoiser, 6, seed=11, spec=QUICK, batch_size=4, progress=False).images
    again = sample(denoiser, 6, seed=11, spec=QUICK, batch_size=4, progress=False).images
    other = sample(denoiser, 6, seed=12, spec=QUICK, batch_size=4, progress=False).images
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 0.05
    assert first.shape == (6, 3, 8, 8) and first.min() >= -1 and first.max() <= 1


def test_image_noise_does_not_depend_on_batch_size(denoiser):
    assert torch.equal(initial_noise(denoiser, 10, 5)[:4], initial_noise(denoiser, 4, 5))
    small = sample(denoiser, 6, seed=3, spec=QUICK, batch_size=2, progress=False).images
    whole = sample(denoiser, 6, seed=3, spec=QUICK, batch_size=6, progress=False).images
    # Same noise; only float summation order differs between batch shapes.
    torch.testing.assert_close(small, whole, rtol=0, atol=1e-4)


def test_ddim_with_eta_zero_is_deterministic_given_noise_and_ddpm_adds_noise(denoiser):
    ddpm = accel.SamplingSpec(name="ddpm", steps=3)
    a = sample(denoiser, 4, seed=1, spec=ddpm, progress=False).images
    b = sample(denoiser, 4, seed=1, spec=ddpm, progress=False).images
    ddim = sample(denoiser, 4, seed=1, spec=QUICK, progress=False).images
    eta = sample(
        denoiser, 4, seed=1, spec=accel.SamplingSpec(steps=3, eta=1.0), progress=False
    ).images
    assert torch.equal(a, b)
    assert not torch.allclose(a, ddim, atol=1e-3) and not torch.allclose(eta, ddim, atol=1e-3)


def test_sampler_follows_the_diffusers_ddim_update(denoiser):
    """One DDIM step from x_T by hand: x0 = (x - sqrt(1-a_t) eps) / sqrt(a_t), clipped; x_prev from
    x0, eps."""
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
    got = sample(denoiser, 2, seed=0, spec=accel.SamplingSpec(steps=1), progress=False).images
    torch.testing.assert_close(got, expected.clamp(-1, 1), rtol=1e-5, atol=1e-5)


def test_the_model_s_own_sampler_is_the_default(denoiser):
    denoiser.sampling = accel.SamplingSpec(name="ddpm", steps=2)
    own = sample(denoiser, 3, seed=4, progress=False)
    given = sample(
        denoiser, 3, seed=4, spec=accel.SamplingSpec(name="ddpm", steps=2), progress=False
    )
    assert own.calls_per_image == 2 and torch.equal(own.images, given.images)


@pytest.mark.parametrize(
    "name,calls", [("dpm++", 5), ("EulerDiscreteScheduler", 5), ("HeunDiscreteScheduler", 9)]
)
def test_any_diffusers_scheduler_by_name_counts_its_calls(denoiser, name, calls):
    """Heun evaluates the network twice per step (but once on the last): calls are counted, not
    assumed."""
    result = sample(
        denoiser, 2, seed=0, spec=accel.SamplingSpec(name=name, steps=5), progress=False
    )
    assert result.calls_per_image == calls and torch.isfinite(result.images).all()


def test_dpm_solver_plus_plus_is_the_second_order_multistep_solver_on_the_model_s_schedule(
    denoiser,
):
    scheduler = accel.SamplingSpec(name="dpm++", steps=20).scheduler(denoiser.scheduler_config)
    assert type(scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert scheduler.config.algorithm_type == "dpmsolver++" and scheduler.config.solver_order == 2
    assert scheduler.config.num_train_timesteps == denoiser.scheduler_config["num_train_timesteps"]
    assert len(scheduler.timesteps) == 20


class Recording(StepHook):
    def __init__(self):
        self.events = []

    def reset(self, trajectory):
        self.events.append(
            ("reset", trajectory.first_image, trajectory.count, len(trajectory.timesteps))
        )

    def pre_forward(self, call):
        self.events.append(("call", call.step, len(call.x_t)))
        return call


def test_hooks_see_every_step_index_and_a_reset_per_trajectory(denoiser):
    hook = Recording()
    denoiser.add_hook("recording", hook)
    sample(denoiser, 5, seed=0, spec=QUICK, batch_size=3, progress=False)

    def per_batch(first, count):
        return [("reset", first, count, 3)] + [("call", i, count) for i in range(3)]

    assert hook.events == per_batch(0, 3) + per_batch(3, 2)
    denoiser.remove_hook("recording")
    denoiser(*denoiser.example_inputs(1))
    assert len(hook.events) == 8


class Doubling(StepHook):
    def new_forward(self, call, forward):
        return 2 * forward(call)


class PlusOne(StepHook):
    def post_forward(self, call, output):
        return output + 1


def test_hooks_chain_in_the_order_they_were_added(denoiser):
    x, t, _ = denoiser.example_inputs(2)
    with torch.no_grad():
        plain = denoiser(x, t)
        denoiser.add_hook("double", Doubling())
        denoiser.add_hook("plus", PlusOne())
        torch.testing.assert_close(denoiser(x, t), 2 * plain + 1)


def test_conditional_models_sample_with_default_conditioning():
    for model in (make_tiny_dit(), make_tiny_text_unet()):
        images = sample(accel.load(model), 3, seed=0, spec=QUICK, progress=False).images
        assert images.shape == (3, 4, 8, 8) and torch.isfinite(images).all()


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(name="euler"), "name"),
        (dict(name="Denoiser"), "name"),
        (dict(steps=0), "steps"),
        (dict(eta=-1.0), "eta"),
        (dict(name="ddpm", eta=0.5), "eta"),
        (dict(prediction_type="noise"), "prediction_type"),
        (dict(steps="20"), "steps"),
    ],
)
def test_bad_sampler_settings_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as error:
        accel.SamplingSpec(**kwargs)
    assert error.value.field == field and str(error.value).startswith(f"SamplingSpec.{field} ")


def test_sampling_spec_round_trips_and_knows_stochastic_samplers():
    spec = accel.SamplingSpec(name="dpm++", steps=20, options={"solver_order": 3})
    assert accel.SamplingSpec.from_dict(spec.to_dict()) == spec
    assert not spec.stochastic and accel.SamplingSpec(name="ddpm").stochastic
    assert accel.SamplingSpec(eta=0.3).stochastic
    assert accel.SamplingSpec(
        name="dpm++", options={"algorithm_type": "sde-dpmsolver++"}
    ).stochastic


def test_a_share_of_the_batches_is_drawn_exactly_as_in_the_whole_run(denoiser):
    """Each batch keeps its index, noise and step generator: a process drawing every 2nd batch of a
    stochastic sampler gets those batches bit for bit (what evaluations under several processes rely
    on)."""
    ddpm = accel.SamplingSpec(name="ddpm", steps=3)
    whole = list(sample_batches(denoiser, 7, seed=5, spec=ddpm, batch_size=2, progress=False))
    odd = list(
        sample_batches(
            denoiser, 7, seed=5, spec=ddpm, batch_size=2, progress=False, batches=slice(1, None, 2)
        )
    )
    assert len(whole) == 4 and len(odd) == 2
    assert all(torch.equal(a.images, b.images) for a, b in zip(odd, whole[1::2]))


def test_zero_samples_and_zero_batch_are_errors(denoiser):
    with pytest.raises(AccelError, match="sample.count must be at least 1"):
        sample(denoiser, 0, spec=QUICK, progress=False)
    with pytest.raises(AccelError, match="sample.batch_size must be at least 1"):
        sample(denoiser, 2, spec=QUICK, batch_size=0, progress=False)


@pytest.mark.gpu
def test_cuda_sampling_matches_cpu(tiny_unet_dir):
    cpu = accel.load(tiny_unet_dir)
    gpu = accel.load(tiny_unet_dir, device="cuda")
    torch.backends.cudnn.allow_tf32 = False
    on_cpu = sample(cpu, 4, seed=2, spec=QUICK, progress=False).images
    on_gpu = sample(gpu, 4, seed=2, spec=QUICK, progress=False).images
    assert on_gpu.device.type == "cpu"
    # fp32 on two devices: rounding only
    torch.testing.assert_close(on_gpu, on_cpu, rtol=0, atol=1e-3)
