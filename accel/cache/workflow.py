"""Cache a model and measure it against the original: what ``accel cache`` runs.

Both models sample with the original's sampler from the same seeds and noise, so PSNR to the original's samples
means something. Caching is only worth it if it beats the cheapest alternative with no new code: the same sampler
with fewer steps. The report measures that sampler at the step count whose MACs per image match the cached
model's, and says which is ahead.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from accel.cache import CACHE, cache_
from accel.cache.config import CacheConfig
from accel.core import registry
from accel.evaluate import EvalConfig, Evaluation, evaluate
from accel.metrics.digits_cnn import to_uint8
from accel.metrics.latency import step_latency_ms
from accel.metrics.quality import fid_setup, psnr_db
from accel.metrics.size import count_macs
from accel.models.loading import load
from accel.sampling import sample

# The goals on digits at DDIM 50, interval 3: wall time per image and FID ratio to the original
GOAL_INTERVAL, SPEEDUP_GOAL, FID_RATIO_GOAL = 3, 1.5, 1.10


@dataclass
class CacheResult:
    model: object
    evaluation: Evaluation


def cache_and_evaluate(source, config: CacheConfig, eval_config: EvalConfig, device=None,
                       sampling: dict | None = None, progress: bool = True) -> CacheResult:
    """``sampling``: changes to the model's own sampler, for both models (caching needs its many steps)."""
    original = load(source, device, sampling)
    registry.check_can_follow(original.transforms, CACHE.name)
    model = load(source, device, sampling)
    record = cache_(model, config)
    evaluation = evaluate(model, baseline=original, config=eval_config, command="cache", model_name=str(source),
                          transform_config=config.to_dict())
    report = evaluation.report
    section = {**{k: v for k, v in record.items() if k not in ("name", "config")},
               **_step_costs(model, record, report.compressed.macs_per_image, eval_config.latency_batch)}
    section["plain_sampler_at_equal_macs"] = equal_macs_baseline(original, report.compressed.macs_per_image,
                                                                 evaluation.images[0], eval_config, progress)
    report.add_section("cache", section, _markdown(section, report))
    checks = goal_checks(report, config, section)
    report.add_section("goals", checks, "".join(f"Goal: {line}\n" for line in checks))
    report.notes += _wall_time_note(report.compressed, section["plain_sampler_at_equal_macs"])
    return CacheResult(model, evaluation)


@torch.inference_mode()
def _step_costs(model, record: dict, macs_per_image: int, latency_batch: int) -> dict:
    """MACs and latency of a full step and of a cached step (one sample's MACs; latency at ``latency_batch``)."""
    full_macs = count_macs(model)
    costs = {"macs_per_full_step": full_macs}
    if "full_steps" not in record:  # diffusers' attention cache decides per block and timestep
        return costs
    hook = model.hooks[CACHE.name]
    full_calls = len(record["full_steps"])
    cached_calls = len(model.sampling.scheduler(model.scheduler_config).timesteps) - full_calls
    costs["macs_per_cached_step"] = (macs_per_image - full_calls * full_macs) // max(cached_calls, 1)
    costs["calls_per_image"] = {"full": full_calls, "cached": cached_calls}
    inputs = model.example_inputs(latency_batch)
    with hook.splitter.capturing() as captured:
        model(*inputs)
    costs["latency_ms_full_step"] = step_latency_ms([model], latency_batch)[0]
    with hook.splitter.reusing(captured.feature):
        costs["latency_ms_cached_step"] = step_latency_ms([model], latency_batch)[0]
    return costs


def equal_macs_baseline(original, macs_per_image: int, original_images, eval_config: EvalConfig,
                        progress: bool = True) -> dict:
    """The original's own sampler at the step count whose MACs per image are closest to ``macs_per_image``:
    FID, PSNR to the original's full-step samples, time per image."""
    macs_per_step = count_macs(original)
    steps = max(1, round(macs_per_image / macs_per_step))
    spec = replace(original.sampling, steps=steps)
    fid = fid_setup(original.sample_shape, eval_config.inception_weights, eval_config.fid_ref,
                    str(original.device))
    samples = sample(original, eval_config.n, eval_config.seed, spec, eval_config.batch_size, progress=progress)
    images = to_uint8(samples.images)
    return {"sampler": spec.to_dict(), "steps": steps, "macs_per_image": macs_per_step * steps,
            "fid": fid.scores(images)["fid"], "psnr_db_vs_original": psnr_db(original_images, images),
            "seconds_per_image": samples.seconds_per_image}


def goal_checks(report, config: CacheConfig, section: dict) -> list[str]:
    """Whether caching beats the plain sampler at equal MACs, and the issue's interval-3 goals where they apply."""
    o, c, d = report.original, report.compressed, report.delta
    plain = section["plain_sampler_at_equal_macs"]
    checks = []
    if c.fid is not None and plain["fid"] is not None:
        ahead = c.fid < plain["fid"]
        checks.append(f"ahead of the plain sampler at equal MACs per image ({plain['steps']} steps): "
                      f"{'met' if ahead else 'NOT met'} (FID {c.fid:.2f} cached vs {plain['fid']:.2f} plain)"
                      + ("" if ahead else ": at this interval, fewer steps beat caching on this model"))

    if config.interval == GOAL_INTERVAL and o.calls_per_image == 50 and d.fid_ratio is not None:
        checks.append(f"interval {GOAL_INTERVAL}: wall time per image at least {SPEEDUP_GOAL:g}x lower: "
                      f"{'met' if d.speedup >= SPEEDUP_GOAL else 'MISSED'} ({d.speedup:.2f}x)")
        checks.append(f"interval {GOAL_INTERVAL}: FID within {FID_RATIO_GOAL - 1:.0%} of the original's: "
                      f"{'met' if d.fid_ratio <= FID_RATIO_GOAL else 'MISSED'} (ratio {d.fid_ratio:.3f})")
    return checks


def _wall_time_note(cached, plain: dict) -> list[str]:
    """A cached step's time falls less than its MACs (per-call work stays: time embedding, norms, launches), so
    the plain sampler at equal MACs can be the faster one."""
    if plain["seconds_per_image"] >= cached.sampling_s_per_image:
        return []
    return [f"in wall time the plain sampler at equal MACs is faster ({plain['seconds_per_image'] * 1e3:.2f} vs "
            f"{cached.sampling_s_per_image * 1e3:.2f} ms per image): equal MACs are not equal time on this machine"]


def _markdown(section: dict, report) -> str:
    o, c = report.original, report.compressed
    plain = section["plain_sampler_at_equal_macs"]
    lines = ["## Cache", "", f"- method: {section['method']}"]
    if "full_steps" in section:
        calls = section["calls_per_image"]
        lines += [f"- full steps ({calls['full']} of {calls['full'] + calls['cached']}): {section['full_steps']}",
                  f"- MACs per step: full {section['macs_per_full_step'] / 1e6:.1f} M, cached "
                  f"{section['macs_per_cached_step'] / 1e6:.1f} M; latency per step: full "
                  f"{section['latency_ms_full_step']:.2f} ms, cached {section['latency_ms_cached_step']:.2f} ms"]
    lines += ["", "| | MACs per image | FID | PSNR to original, dB | ms per image |", "|---|---|---|---|---|",
              f"| original ({o.calls_per_image} steps) | {o.macs_per_image / 1e9:.3f} G | {_num(o.fid)} | - | "
              f"{o.sampling_s_per_image * 1e3:.2f} |",
              f"| cached | {c.macs_per_image / 1e9:.3f} G | {_num(c.fid)} | {_num(report.delta.psnr_db_vs_original)} "
              f"| {c.sampling_s_per_image * 1e3:.2f} |",
              f"| plain, {plain['steps']} steps (equal MACs) | {plain['macs_per_image'] / 1e9:.3f} G | "
              f"{_num(plain['fid'])} | {_num(plain['psnr_db_vs_original'])} | {plain['seconds_per_image'] * 1e3:.2f} |"]
    return "\n".join(lines) + "\n"


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"
