"""Measure a model, alone or side by side with the model it came from: FID, PSNR, latency, size."""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from accel.errors import AccelError
from accel.metrics.digits_cnn import to_uint8
from accel.metrics.latency import step_latency_ms
from accel.metrics.quality import FidSetup, fid_setup, psnr_db
from accel.metrics.size import count_macs, count_params, weights_bytes
from accel.models.denoiser import Denoiser
from accel.report import delta, versions
from accel.sampling import SamplerConfig, sample


@dataclass(frozen=True)
class EvalConfig:
    n: int = 2000
    seed: int = 0
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    latency_batch: int = 1
    latency_repeats: int = 30
    inception_weights: str | None = None
    fid_ref: str | None = None

    def __post_init__(self):
        if self.n < 2:
            raise AccelError(f"--n must be at least 2 to compute FID, got {self.n}")
        if self.latency_batch < 1:
            raise AccelError(f"--latency-batch must be at least 1, got {self.latency_batch}")


@dataclass
class Evaluation:
    report: dict
    images: list[np.ndarray]  # uint8 samples per model, original first


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def _measure(denoiser: Denoiser, config: EvalConfig, fid: FidSetup, latency_ms: float) -> tuple[dict, np.ndarray]:
    samples = sample(denoiser, config.n, config.seed, config.sampler)
    images = to_uint8(samples.images)
    measures = {**fid.scores(images), "latency_ms_per_step": latency_ms,
                "sampling_s_per_image": samples.seconds_per_image, "params": count_params(denoiser),
                "macs": count_macs(denoiser), "size_bytes": weights_bytes(denoiser)}
    return measures, images


def evaluate(model: Denoiser, baseline: Denoiser | None = None, config: EvalConfig = EvalConfig(),
             command: str = "eval", model_name: str | None = None, transform_config: dict | None = None) -> Evaluation:
    """Sample ``config.n`` images from each model with the same seeds and noise, then measure them.

    With a ``baseline`` the report compares it ("original") with ``model`` ("compressed").
    """
    models = [baseline, model] if baseline is not None else [model]
    device = model.device
    fid = fid_setup(model.sample_shape, config.inception_weights, config.fid_ref, str(device))
    latencies = step_latency_ms(models, config.latency_batch, repeats=config.latency_repeats)
    measured = [_measure(m, config, fid, latency) for m, latency in zip(models, latencies)]
    report = {
        "command": command,
        "model": model_name or model.source,
        "seed": config.seed,
        "device": device.type,
        "device_name": device_name(device),
        "versions": versions(),
        "sampler": config.sampler.to_dict(),
        "fid_features": fid.name,
        "fid_samples": config.n,
        "fid_reference_samples": fid.real.stats.count if fid.real else None,
        "fid_floor": fid.real.floor if fid.real else None,
        "fid_floor_samples": fid.real.half_size if fid.real else None,
        "fid_unavailable": fid.unavailable_reason,
        "latency": {"batch_size": config.latency_batch, "repeats": config.latency_repeats},
        "original": measured[0][0],
        "compressed": measured[1][0] if baseline is not None else None,
        "delta": None,
        "config": transform_config or {},
        "eval_config": {k: v for k, v in asdict(config).items() if k != "sampler"},
        "notes": list(dict.fromkeys(note for m in models for note in m.notes)),
    }
    if baseline is not None:
        report["delta"] = delta(measured[0][0], measured[1][0], psnr_db(measured[0][1], measured[1][1]))
    return Evaluation(report, [images for _, images in measured])
