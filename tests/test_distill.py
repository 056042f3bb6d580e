"""Step distillation's pieces against diffusers and against the paper's algebra, and the transform
on tiny networks: it must change the weights and the sampler, and an artifact must come back the
same."""

import copy
import json

import pytest
import torch

import accel
from accel.distillation.schedule import CLEAN, Schedule, boundary_scalings, student_timesteps
from accel.distillation.tasks import ConsistencyDistillation, ProgressiveStage
from conftest import make_tiny_unet

SCHEDULE = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "epsilon",
    "clip_sample": True,
}
TINY = accel.TrainConfig(steps=3, batch_size=4, warmup_steps=1, checkpoint_every=2)


def _images(count=16, size=8):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_ddim_step_is_diffusers_ddim_with_trailing_timesteps(prediction, steps):
    from diffusers import DDIMScheduler

    schedule = Schedule(SCHEDULE)
    ddim = DDIMScheduler.from_config(
        {**SCHEDULE, "prediction_type": prediction, "timestep_spacing": "trailing"}
    )
    ddim.set_timesteps(steps)
    assert ddim.timesteps.tolist() == student_timesteps(schedule, steps)
    z, output = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    for t in ddim.timesteps:
        expected = ddim.step(output, t, z).prev_sample
        ours = schedule.ddim_step(
            output, z, t.repeat(2), (t - 1000 // steps).clamp(min=CLEAN).repeat(2), prediction
        )
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_boundary_scalings_are_lcm_schedulers():
    from diffusers import LCMScheduler

    lcm = LCMScheduler.from_config(SCHEDULE)
    for t in (0, 19, 259, 999):
        c_skip, c_out = boundary_scalings(torch.tensor([t]))
        assert (c_skip.item(), c_out.item()) == pytest.approx(
            lcm.get_scalings_for_boundary_condition_discrete(t)
        )
    c_skip, c_out = boundary_scalings(torch.tensor([0]))
    # f(x, 0) = x: the consistency boundary condition
    assert c_skip.item() == 1.0 and c_out.item() == 0.0


def _teacher():
    return make_tiny_unet().eval()


def _eps_of(module, x, t, cond, guidance=None):
    return module(x, t).sample


def test_progressive_target_is_where_one_student_step_lands_on_two_teacher_steps():
    """Algorithm 2: a student whose x0 is the target takes z_t to exactly the teacher's z_t'' in one
    DDIM step."""
    schedule = Schedule({**SCHEDULE, "clip_sample": False})
    stage = ProgressiveStage(
        _teacher(), "epsilon", _eps_of, schedule, _images(), None, "v_prediction", student_steps=4
    )
    z = torch.randn(3, 3, 8, 8)
    for t in stage.timesteps:
        t = torch.full((3,), t)
        end = (t - 250).clamp(min=CLEAN)
        two_steps = stage._teacher_step(
            stage._teacher_step(z, t, t - 125, None), t - 125, end, None
        )
        one_step = schedule.ddim_step(stage.target(z, t, None), z, t, end, "sample")
        torch.testing.assert_close(one_step, two_steps, rtol=1e-3, atol=1e-4)


def test_consistency_target_at_the_boundary_is_the_teachers_step_itself():
    schedule = Schedule(SCHEDULE)
    teacher = _teacher()
    task = ConsistencyDistillation(
        teacher,
        "epsilon",
        _eps_of,
        schedule,
        _images(),
        None,
        "v_prediction",
        student=copy.deepcopy(teacher),
        skip=20,
        target_ema=0.95,
        loss="l2",
    )
    z, t = torch.randn(2, 3, 8, 8), torch.tensor([19, 19])
    stepped = task._teacher_step(z, t, torch.tensor([0, 0]), None)
    target = task.consistency(
        _eps_of(task.target_network, stepped, torch.tensor([0, 0]), None),
        stepped,
        torch.tensor([0, 0]),
    )
    torch.testing.assert_close(target, stepped)
    assert task.timesteps[0] == 19 and task.timesteps[-1] == 999 and len(task.timesteps) == 50


def _tiny_denoiser():
    return accel.Denoiser(make_tiny_unet(), SCHEDULE, source="tiny")


@pytest.mark.parametrize("method, steps", [("progressive", 2), ("consistency", 2)])
def test_distill_changes_weights_sampler_and_prediction(method, steps, tmp_path):
    model = _tiny_denoiser()
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    accel.distill(
        model,
        accel.DistillConfig(method=method, steps=steps, teacher_steps=8),
        _images(),
        TINY,
        progress=False,
    )
    changed = [k for k, v in model.module.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2  # a distiller that trains nothing fails here
    assert (
        model.sampling.steps == steps
        and model.scheduler_config["prediction_type"] == "v_prediction"
    )
    assert model.sampling.name == ("ddim" if method == "progressive" else "LCMScheduler")
    record = model.transforms[-1]
    assert record["name"] == "distill" and record["teacher"]["prediction_type"] == "epsilon"
    assert [s.get("student_steps") for s in record["stages"]] == (
        [4, 2] if method == "progressive" else [None]
    )
    assert accel.sample(model, 2, progress=False).calls_per_image == steps


def test_a_distilled_artifact_reloads_with_its_sampler_and_outputs(tmp_path):
    model = _tiny_denoiser()
    accel.distill(
        model, accel.DistillConfig(steps=1, teacher_steps=2), _images(), TINY, progress=False
    )
    accel.save(model, tmp_path / "student")
    loaded = accel.load(tmp_path / "student")
    assert (
        loaded.sampling == model.sampling
        and loaded.scheduler_config["prediction_type"] == "v_prediction"
    )
    assert [t["name"] for t in loaded.transforms] == ["distill"]
    x, t, cond = model.example_inputs(2)
    torch.testing.assert_close(loaded(x, t, cond), model.eval()(x, t, cond), rtol=0, atol=0)
    first, again = (accel.sample(m, 3, seed=1, progress=False).images for m in (model, loaded))
    torch.testing.assert_close(first, again)


def test_consistency_resume_restores_the_target_network(tmp_path):
    """The target network is training state: a run resumed from a checkpoint ends where an
    uninterrupted one does."""
    config = accel.DistillConfig(method="consistency", steps=1)
    train = accel.TrainConfig(steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2)
    straight = _tiny_denoiser()
    accel.distill(straight, config, _images(), train, work_dir=tmp_path / "a", progress=False)

    resumed = _tiny_denoiser()
    real_loss, calls = ConsistencyDistillation.loss, {"n": 0}

    def dies_on_fourth_step(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_loss(self, *args)

    ConsistencyDistillation.loss = dies_on_fourth_step
    try:
        with pytest.raises(KeyboardInterrupt):
            accel.distill(
                resumed, config, _images(), train, work_dir=tmp_path / "b", progress=False
            )
    finally:
        ConsistencyDistillation.loss = real_loss
    assert (tmp_path / "b" / "consistency" / "checkpoint" / "tensors.safetensors").is_file()
    resumed = _tiny_denoiser()
    accel.distill(resumed, config, _images(), train, work_dir=tmp_path / "b", progress=False)
    assert resumed.transforms[-1]["stages"][0]["resumed_at_step"] == 2
    for (name, a), (_, b) in zip(
        straight.module.state_dict().items(), resumed.module.state_dict().items()
    ):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.slow
def test_two_processes_distill_to_the_same_student(tmp_path):
    """`accelerate launch` with nothing else changed: 2 CPU processes (gloo) train each stage
    together, the main one keeps each finished stage, and both end with the same student."""
    from safetensors.torch import load_file
    from test_train import run_two_processes

    run_two_processes(str(tmp_path), "distill")
    stages = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [[s["processes"] for s in ss] for ss in stages] == [[2, 2], [2, 2]]
    weights = [load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["stage-02", "stage-04"]
    assert not (tmp_path / "work" / "stage-04" / "checkpoint").exists()


def test_the_distill_stage_names_its_data_as_the_command_line_does():
    budget = dict(steps=1, teacher_steps=2, train_steps=3, train_batch=4, progress=False)
    with pytest.raises(accel.ConfigError, match="DataConfig.source is needed for this model"):
        accel.run_stage("distill", _tiny_denoiser(), **budget)
    digits = accel.load("digits")
    result = accel.run_stage("distill", digits, **budget)
    assert result.model.sampling.steps == 1 and result.record["data"].startswith(
        "the digits training set"
    )
    assert digits.transforms == [] and digits.sampling.steps == 50  # the stage ran on a copy


def test_an_artifact_made_from_digits_trains_on_the_digits_set_by_default(tmp_path):
    """A chain's later stage (distilling a pruned teacher) has the digits set without --data."""
    from accel.train.data import DataConfig, data_identity

    pruned_like = accel.load("digits")
    accel.cache_(pruned_like, accel.CacheConfig(interval=2))
    accel.save(pruned_like, tmp_path / "a")
    again = accel.load(tmp_path / "a")
    assert again.source == str(tmp_path / "a") and again.origin == "digits"
    assert data_identity(DataConfig(), again) == {"data": "digits"}


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"beta_schedule": "exotic"},
            "accel cannot step the teacher's noise schedule: exotic is not implemented",
        ),
        ({"thresholding": True}, "uses dynamic thresholding"),
        ({"_class_name": "FlowMatchEulerDiscreteScheduler"}, "(flow matching)"),
    ],
)
def test_a_schedule_accel_cannot_step_is_named(change, message):
    with pytest.raises(accel.AccelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Schedule({**SCHEDULE, **change})
