"""What ``accel distill`` reports beside the evaluation: the student's sampler and training record,
and what the same step count gives without distillation (the teacher's own DDIM at the student's
steps), sampled and timed in one run with the teacher and the student."""

from __future__ import annotations

import copy

from accel.core.sampling_spec import SamplingSpec
from accel.distillation.schedule import Schedule, student_timesteps
from accel.measure.base import Measurer
from accel.report import format_value
from accel.report.markdown import describe_sampler


def teacher_ddim(teacher, steps: int) -> SamplingSpec:
    """What the same step count gives without distillation: the teacher's DDIM at the student's
    timesteps, with the teacher's guidance and labels."""
    return SamplingSpec(
        "ddim",
        steps,
        prediction_type=teacher.sampling.prediction_type,
        options={"timestep_spacing": "trailing"},
        guidance=teacher.sampling.guidance,
        labels=teacher.sampling.labels,
    )


class DistillMeasurer(Measurer):
    def extra_models(self, model) -> list:
        # the same network, the student's step count without distillation
        free = copy.copy(self.original)
        free.sampling = teacher_ddim(self.original, self.settings["distill"].steps)
        return [free]

    def add_sections(self, report, result, extras) -> None:
        free = extras[0].report
        steps = self.settings["distill"].steps
        record, o, c = result.record, report.original, report.compressed
        section = {
            "method": self.settings["distill"].method,
            "student_sampler": record["sampler"],
            "student_prediction": self.settings["distill"].prediction_type,
            "teacher": record["teacher"],
            "data": record["data"],
            "stages": record["stages"],
            "calls_per_image": [o.calls_per_image, c.calls_per_image],
            "seconds_per_image": [o.sampling_s_per_image, c.sampling_s_per_image],
            "teacher_at_student_steps": {
                "sampler": free.compressed.sampler,
                "fid": free.compressed.fid,
                "seconds_per_image": free.compressed.sampling_s_per_image,
                "speedup": free.delta.speedup,
                "timesteps": student_timesteps(Schedule(self.original.scheduler_config), steps),
            },
        }
        report.add_section("distillation", section, markdown(section, report))


def markdown(section: dict, report) -> str:
    o, c, free = report.original, report.compressed, section["teacher_at_student_steps"]
    lines = [
        "## Distillation",
        "",
        f"- {section['method']} distillation on {section['data']}; the "
        f"student samples with {describe_sampler(section['student_sampler'])} "
        f"and predicts {section['student_prediction']}",
        f"- denoiser calls per image: teacher {o.calls_per_image}, student {c.calls_per_image}; "
        f"wall time per image {format_value(o.sampling_s_per_image * 1e3)} ms vs "
        f"{format_value(c.sampling_s_per_image * 1e3)} ms "
        f"({format_value(report.delta.speedup, 'speedup')}), sampled in one run",
        f"- without distillation, the teacher's DDIM at {len(free['timesteps'])} steps "
        f"(timesteps {free['timesteps']}): FID {format_value(free['fid'])}, "
        f"{format_value(free['seconds_per_image'] * 1e3)} ms per image, in the same run",
        "",
        "| stage | training steps | seconds | loss, first tenth -> last |",
        "|---|---|---|---|",
    ]
    for stage in section["stages"]:
        name = (
            f"{2 * stage['student_steps']} -> {stage['student_steps']} steps"
            if "student_steps" in stage
            else "consistency"
        )
        losses = stage["loss_per_tenth"]
        lines.append(
            f"| {name} | {stage['train_steps']} | {stage['seconds']:.0f} | {losses[0]:.4f} -> "
            f"{losses[-1]:.4f} |"
        )
    return "\n".join(lines) + "\n"
