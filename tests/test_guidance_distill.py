"""Guidance distillation on a tiny DiT: the w input, stage one's target, the student that takes w,
the baked-in weight, and the refusals."""

import copy

import pytest
import torch

import accel
from accel.core.guidance_input import add_guidance_input, guidance_weight
from accel.distillation.schedule import Schedule
from accel.distillation.tasks import Guidance, GuidanceStage
from accel.export.onnx import export_onnx
from accel.sampling import guided_eps
from conftest import make_tiny_dit, refused

SCHEDULE = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": True,
}
TINY = accel.TrainConfig(steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2)


def _dit(guidance: float = 1.0):
    return accel.Denoiser(
        make_tiny_dit(), SCHEDULE, source="tiny-dit", sampling=accel.SamplingSpec(guidance=guidance)
    )


def _images(count=16):
    return torch.rand(count, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _stage_one(teacher, **options) -> GuidanceStage:
    """Stage one's task on ``teacher`` (an eps model), on the random images."""
    return GuidanceStage(
        teacher.module,
        "epsilon",
        teacher.eps_of,
        Schedule(SCHEDULE),
        _images(),
        teacher.default_cond,
        "epsilon",
        **options,
    )


def _inputs(model, batch=3):
    x, t, labels = model.example_inputs(batch)
    return x, t, labels


def test_the_weight_input_starts_as_the_teacher_and_changes_the_output_once_trained():
    model = _dit()
    x, t, labels = _inputs(model)
    before = model.eps_of(model.module, x, t, labels)
    add_guidance_input(model.module, 1.0, 5.0)
    assert model.guidance_range == (1.0, 5.0)
    for w in (1.0, 3.0):  # zero-initialised: the student starts as the conditional teacher
        torch.testing.assert_close(model(x, t, labels, guidance=w), before)
    for block in model.module.transformer_blocks:
        torch.nn.init.normal_(block.norm1.emb.weight_mlp[-1].weight, std=0.1)
    low, high = (model(x, t, labels, guidance=w) for w in (1.0, 4.0))
    assert (low - high).abs().max() > 1e-4
    with pytest.raises(RuntimeError, match="inside guidance_weight"):
        model.module(x, timestep=t, class_labels=labels)
    with guidance_weight(model.module, 4.0):
        eps = model.module(x, timestep=t, class_labels=labels).sample[:, :4]  # learned variance
    torch.testing.assert_close(eps, high)


def test_stage_one_target_is_the_teachers_two_call_guided_output():
    teacher = _dit(guidance=3.0)
    task = _stage_one(
        teacher,
        guidance=Guidance(1.0, 5.0, teacher.null_class, teacher_input=False, student_input=True),
    )
    x, t, labels = _inputs(teacher, 2)
    w = torch.tensor([3.0, 3.0])
    torch.testing.assert_close(
        task._teacher_output(x, t, labels, w), guided_eps(teacher, x, t[0], labels, None, 3.0)
    )
    conditional = teacher.eps_of(teacher.module, x, t, labels)
    torch.testing.assert_close(task._teacher_output(x, t, labels, torch.ones(2)), conditional)


def test_a_guidance_distilled_student_takes_w_in_one_call_per_step_reloads_and_exports(tmp_path):
    model = _dit(guidance=3.0)
    accel.distill(
        model,
        accel.DistillConfig(steps=2, teacher_steps=4, guidance_range=(1.0, 4.0)),
        _images(),
        TINY,
        progress=False,
    )
    record = model.transforms[-1]
    assert record["guidance"] == {"input": True, "range": [1.0, 4.0]}
    assert [s.get("stage") for s in record["stages"]][0] == "guidance"
    assert record["teacher"]["evaluations_per_step"] == 2
    mlp = model.module.transformer_blocks[0].norm1.emb.weight_mlp[-1].weight
    assert mlp.abs().max() > 0  # stage one trained the weight embedding
    assert model.sampling.guidance == 3.0 and model.sampling.steps == 2
    samples = accel.sample(model, 2, progress=False)
    assert samples.calls_per_image == 2  # 2 steps, one call each, although w = 3
    other = accel.sample(model, 2, spec=model.sampling.changed({"guidance": 1.5}), progress=False)
    assert (samples.images - other.images).abs().max() > 1e-4  # the student follows w
    with pytest.raises(accel.ConfigError, match="within 1-4"):
        accel.sample(model, 2, spec=model.sampling.changed({"guidance": 6.0}), progress=False)
    accel.save(model, tmp_path / "student")
    loaded = accel.load(tmp_path / "student")
    assert loaded.guidance_range == (1.0, 4.0)
    torch.testing.assert_close(accel.sample(loaded, 2, progress=False).images, samples.images)
    record = export_onnx(loaded, tmp_path / "s.onnx")
    assert record["parity"]["met"]
    exported = accel.load(tmp_path / "s.onnx")
    assert exported.guidance_range == (1.0, 4.0) and exported.runtime.startswith("ONNX Runtime")
    for w in (1.5, 3.5):  # the weight is a graph input: ONNX Runtime follows it as PyTorch does
        spec = model.sampling.changed({"guidance": w})
        torch.testing.assert_close(
            accel.sample(exported, 2, spec=spec, progress=False).images,
            accel.sample(loaded, 2, spec=spec, progress=False).images,
            rtol=0,
            atol=1e-4,
        )
    with pytest.raises(accel.ConfigError, match="within 1-4"):
        accel.sample(exported, 2, spec=model.sampling.changed({"guidance": 5.0}), progress=False)


def test_without_a_range_the_teachers_weight_is_baked_in():
    model = _dit(guidance=3.0)
    accel.distill(
        model,
        accel.DistillConfig(method="consistency", steps=2, solver_skip=100),
        _images(),
        TINY,
        progress=False,
    )
    assert model.transforms[-1]["guidance"] == {"input": False, "baked_in": 3.0}
    assert model.guidance_range is None and not model.sampling.guided
    assert accel.sample(model, 2, progress=False).calls_per_image == 2


def test_consistency_distillation_can_take_w_as_input_too():
    model = _dit()
    accel.distill(
        model,
        accel.DistillConfig(
            method="consistency", steps=2, solver_skip=100, guidance_range=(1.0, 3.0)
        ),
        _images(),
        TINY,
        progress=False,
    )
    assert model.guidance_range == (1.0, 3.0) and model.sampling.guidance == 1.0


@pytest.mark.parametrize(
    "weights, message",
    [
        ("3,1", "low < high"),
        ("2,2", "low < high"),
        ("0.5,2", "must start at 1"),
        ("1", "must be two weights"),
        ("a,b", "must be low,high"),
    ],
)
def test_a_bad_guidance_range_is_refused(weights, message, capsys, tmp_path):
    err = refused(
        capsys,
        tmp_path,
        *("distill", "--model", "digits", "--guidance-range", weights),
        *("--out", str(tmp_path / "s")),
    )
    assert message in err


def test_guidance_distillation_needs_a_teacher_with_a_null_class(capsys, tmp_path):
    err = refused(
        capsys,
        tmp_path,
        *("distill", "--model", "digits", "--guidance-range", "1,4", "--n", "8"),
        *("--out", str(tmp_path / "s")),
    )
    assert "needs a teacher with a null class" in err and "is not class-conditional" in err


def test_the_digits_set_pairs_each_image_with_its_class_for_a_class_model():
    from accel.train.data import DataConfig, training_images

    images = training_images(DataConfig(), accel.load("digits-dit"))
    assert images.labels is not None and len(images.labels) == len(images.images) == 1438
    plain = training_images(DataConfig(), accel.load("digits"))
    assert plain.labels is None and len(plain.images) == 1797


def test_a_distillation_batch_takes_each_images_own_label():
    teacher = _dit()
    labels = torch.arange(16) % 10
    task = _stage_one(teacher, labels=labels)
    generator = torch.Generator().manual_seed(0)
    index = torch.randint(0, 16, (8,), generator=torch.Generator().manual_seed(0))
    _, _, cond, w = task._batch(8, generator, [500], "cpu")
    assert cond.tolist() == labels[index].tolist() and w is None


def test_label_dropout_keeps_the_null_class_in_training_batches():
    teacher = _dit()
    task = _stage_one(teacher, null_dropout=(10, 0.5))
    _, _, cond, _ = task._batch(64, torch.Generator().manual_seed(0), [500], "cpu")
    assert 10 < (cond == 10).sum() < 54 and (cond < 10).any()


def test_a_guidance_distilled_student_is_quantized_along_its_own_guided_trajectory(tmp_path):
    from accel.calib.collect import collect

    model = _dit(guidance=2.0)
    accel.distill(
        model,
        accel.DistillConfig(steps=2, teacher_steps=4, guidance_range=(1.0, 4.0)),
        _images(),
        TINY,
        progress=False,
    )
    student = copy.deepcopy(model)
    calib = collect(model, accel.CalibConfig(samples=2, every=1), progress=False)
    assert len(calib.x) == 2 * 2  # one call per step: no unconditional half
    accel.quantize_(model, accel.QuantConfig(w_bits=4, a_bits=8, recon_iters=2), calib)
    x, t, labels = model.example_inputs(2)
    assert (model(x, t, labels) - student(x, t, labels)).abs().max() > 1e-5
    accel.save(model, tmp_path / "q")
    torch.testing.assert_close(accel.load(tmp_path / "q")(x, t, labels), model(x, t, labels))


def test_pruning_fine_tunes_a_class_model_on_its_own_labels_and_the_null_class():
    from accel.prune.finetune import class_labels
    from accel.train.data import TrainingImages

    model, labels = _dit(), torch.arange(16) % 10
    data = TrainingImages(_images(), "given", {}, labels)
    drawn = class_labels(model, data, 0.5).for_batch(torch.arange(16), torch.Generator())
    kept = drawn != model.null_class
    assert 0 < kept.sum() < 16 and torch.equal(drawn[kept], labels[kept])
    unlabelled = TrainingImages(_images(), "given", {})
    assert class_labels(model, unlabelled, 0.5) is None


def test_the_guided_transformer_chain_runs_on_a_dit_and_ends_in_onnx_runtime(tmp_path):
    from accel.compress import load_recipe

    fast = load_recipe("dit-fast").to_dict()["stages"]
    assert [s["name"] for s in fast] == ["prune", "distill", "quantize", "export"]
    assert fast[1]["guidance-range"] == "1,3"
    tiny = {"train-batch": 4, "data": "teacher", "teacher-samples": 8}
    recipe = {
        "stages": [
            {"prune": {"ratio": 0.5, "round-to": 4, "finetune-steps": 2, **tiny}},
            {
                "distill": {
                    **{"steps": 2, "teacher-steps": 4, "guidance-range": "1,3"},
                    **{"train-steps": 2, **tiny},
                }
            },
            {"quantize": {"bits": 8, "act-bits": 0, "recon-iters": 0, "calib-samples": 2}},
            {"export": {"format": "onnx"}},
        ]
    }
    result = accel.compress(
        _dit(guidance=2.0),
        recipe,
        tmp_path / "chain",
        eval_config=accel.EvalConfig(n=4, batch_size=4),
        progress=False,
        log=lambda line: None,
    )
    final = result.model
    assert final.guidance_range == (1.0, 3.0) and final.runtime.startswith("ONNX Runtime")
    assert final.sampling.steps == 2 and final.sampling.guidance == 2.0
    assert result.report.compressed.calls_per_image == 2  # the teacher: 50 steps x 2 evaluations
    assert result.report.original.calls_per_image == 100
