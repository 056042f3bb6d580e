"""What ``accel cache`` reports beside the evaluation: what a full and a cached step cost, and
whether caching beats the cheapest alternative with no new code: the same sampler with fewer steps,
at the step count whose MACs per image match the cached model's, sampled and timed in one run with
the original and the cached model."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from accel.measure.base import Measurer
from accel.metrics.latency import step_latency_ms
from accel.metrics.size import count_macs, macs_per_image
from accel.report import format_value

CACHE_HOOK = "cache"  # the name the cache transform's step hook is attached under


class CacheMeasurer(Measurer):
    def extra_models(self, model) -> list:
        plain = copy.copy(self.original)  # the same network and sampler, fewer steps
        per_step = count_macs(self.original) * self.original.evaluations_per_step()
        steps = max(1, round(macs_per_image(model) / per_step))
        plain.sampling = replace(self.original.sampling, steps=steps)
        return [plain]

    def add_sections(self, report, result, extras) -> None:
        plain = extras[0].report
        section = {
            **{k: v for k, v in result.record.items() if k not in ("name", "config")},
            **step_costs(
                result.model,
                result.record,
                report.compressed.macs_per_image,
                self.eval_config.latency_batch,
            ),
            "plain_sampler_at_equal_macs": {
                "sampler": plain.compressed.sampler,
                "steps": plain.compressed.sampler["steps"],
                "macs_per_image": plain.compressed.macs_per_image,
                "fid": plain.compressed.fid,
                "psnr_db_vs_original": plain.delta.psnr_db_vs_original,
                "seconds_per_image": plain.compressed.sampling_s_per_image,
            },
        }
        report.add_section("cache", section, markdown(section, report))
        report.notes += wall_time_note(report.compressed, section["plain_sampler_at_equal_macs"])


@torch.inference_mode()
def step_costs(model, record: dict, macs_per_image_: int, latency_batch: int) -> dict:
    """MACs and latency of a full step and of a cached step (one sample's MACs; latency at
    ``latency_batch``)."""
    full_macs = count_macs(model)
    costs = {"macs_per_full_step": full_macs}
    hook = model.hooks[CACHE_HOOK]
    if "full_steps" not in record:  # an adaptive cache decides on the data, call by call
        return {**costs, "calls_in_evaluation": dict(hook.counts)}
    splitter = hook.splitter
    # a guided step is one call on twice the batch, as the latency is timed
    inputs = model.example_inputs(latency_batch * model.evaluations_per_step())
    with splitter.capturing() as captured:
        model(*inputs)
    with splitter.reusing(captured.feature[:1]):
        costs["macs_per_cached_step"] = count_macs(model)
    costs["calls_per_image"] = {
        "full": len(record["full_steps"]),
        "cached": len(model.sampling.scheduler(model.scheduler_config).timesteps)
        - len(record["full_steps"]),
    }
    costs["latency_ms_full_step"] = step_latency_ms([model], latency_batch)[0]
    with splitter.reusing(captured.feature):
        costs["latency_ms_cached_step"] = step_latency_ms([model], latency_batch)[0]
    return costs


def wall_time_note(cached, plain: dict) -> list[str]:
    """A cached step's time falls less than its MACs (per-call work stays: time embedding, norms,
    launches), so the plain sampler at equal MACs can be the faster one."""
    if plain["seconds_per_image"] >= cached.sampling_s_per_image:
        return []
    return [
        "in wall time the plain sampler at equal MACs is faster "
        f"({plain['seconds_per_image'] * 1e3:.2f} vs {cached.sampling_s_per_image * 1e3:.2f} "
        "ms per image): equal MACs are not equal time on this machine"
    ]


def markdown(section: dict, report) -> str:
    o, c = report.original, report.compressed
    plain = section["plain_sampler_at_equal_macs"]
    lines = ["## Cache", "", f"- method: {section['method']}"]
    if "calls_in_evaluation" in section:
        calls = section["calls_in_evaluation"]
        lines.append(
            f"- calls in the evaluation: {calls['full']} full, {calls['cached']} from the cache "
            f"(threshold {section['threshold']:g}); MACs per image counted on one image's "
            "trajectory, whose decisions can differ from a batch's (one decision per call)"
        )
    if "full_steps" in section:
        calls = section["calls_per_image"]
        lines += [
            f"- full steps ({calls['full']} of "
            f"{calls['full'] + calls['cached']}): {section['full_steps']}",
            f"- MACs per step: full {format_value(section['macs_per_full_step'], 'macs')}, cached "
            f"{format_value(section['macs_per_cached_step'], 'macs')}; latency per step: full "
            f"{format_value(section['latency_ms_full_step'])} ms, cached "
            f"{format_value(section['latency_ms_cached_step'])} ms",
        ]
    rows = [
        ("original", o.sampler["steps"], o.macs_per_image, o.fid, None, o.sampling_s_per_image),
        (
            "cached",
            c.sampler["steps"],
            c.macs_per_image,
            c.fid,
            report.delta.psnr_db_vs_original,
            c.sampling_s_per_image,
        ),
        (
            "plain, equal MACs",
            plain["steps"],
            plain["macs_per_image"],
            plain["fid"],
            plain["psnr_db_vs_original"],
            plain["seconds_per_image"],
        ),
    ]
    lines += [
        "",
        "| | steps | MACs per image | FID | PSNR to original, dB | ms per image |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {steps} | {format_value(macs, 'macs')} | {format_value(fid)} "
        f"| {format_value(psnr)} | {format_value(seconds * 1e3)} |"
        for name, steps, macs, fid, psnr, seconds in rows
    ]
    lines.append(
        "\nAll three sampled and timed in one run (same "
        "seeds and initial noise, batches interleaved)."
    )
    return "\n".join(lines) + "\n"
