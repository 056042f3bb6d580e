"""Measure a model, alone or side by side with the model it came from: FID, PSNR, latency, time and
MACs per image, size. Each model is sampled with its own sampler (``Denoiser.sampling``) from the
same seeds and noise."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import numpy as np
import torch

from accel.core.config import Config
from accel.core.denoiser import Denoiser
from accel.core.processes import Processes, current_processes
from accel.metrics.digits_cnn import to_uint8
from accel.metrics.latency import step_latency_ms
from accel.metrics.quality import FidSetup, fid_setup, psnr_db, unit_feature_distance
from accel.metrics.size import count_macs, count_params, macs_per_image, weights_bytes
from accel.report import Delta, Measures, Report
from accel.sampling import DEFAULT_BATCH, Samples, join, sample_batches


@dataclass(frozen=True)
class EvalConfig(Config):
    n: int = 2000
    seed: int = 0
    batch_size: int = DEFAULT_BATCH
    latency_batch: int = 1
    latency_repeats: int = 30
    inception_weights: str | None = None
    fid_ref: str | None = None

    def validate(self) -> None:
        if self.n < 2:
            raise self.invalid("n", f"must be at least 2 to compute FID, got {self.n}")
        for name in ("batch_size", "latency_batch", "latency_repeats"):
            if getattr(self, name) < 1:
                raise self.invalid(name, f"must be at least 1, got {getattr(self, name)}")
        if self.fid_ref and not self.inception_weights:
            raise self.invalid(
                "fid_ref",
                "gives real images for Inception FID, which also needs the Inception "
                "weights file (`inception_weights`)",
            )
        if self.inception_weights and not self.fid_ref:
            raise self.invalid(
                "fid_ref",
                "is needed for Inception FID: real images to compare with (an .npz with "
                "a uint8 array 'images', N x C x H x W)",
            )


@dataclass
class Evaluation:
    report: Report
    images: list[np.ndarray]  # uint8 samples per model, original first


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def _sample_interleaved(
    models: list[Denoiser], config: EvalConfig, processes: Processes
) -> list[Samples]:
    """Every model's samples (uint8 images), drawn batch by batch in turn, so a slow moment of the
    machine hits all alike. Under several processes each draws every ``processes.count``-th batch,
    exactly as a single process would draw it, and every process gets all batches back in order."""
    _warm_up(models, min(config.batch_size, config.n))
    share = slice(processes.rank, None, processes.count)
    runs = [
        sample_batches(
            m,
            config.n,
            config.seed,
            batch_size=config.batch_size,
            progress=processes.is_main,
            batches=share,
        )
        for m in models
    ]
    own_steps = [[_as_uint8(batch) for batch in step] for step in zip(*runs)]
    steps = processes.gather_strided(own_steps)
    return [join(list(batches)) for batches in zip(*steps)]


@torch.inference_mode()
def _warm_up(models: list[Denoiser], batch_size: int) -> None:
    """One call of each model at the sampling batch before any batch is timed: a first call pays for
    memory, lazily built kernels and ONNX Runtime's first run, which no later batch pays."""
    for model in models:
        model(*model.example_inputs(batch_size))


def _as_uint8(batch: Samples) -> Samples:
    """The batch as an image file holds it: a quarter of the bytes to send between processes."""
    return Samples(
        torch.from_numpy(to_uint8(batch.images)), batch.seconds, batch.calls_per_image, batch.labels
    )


def _measures(
    denoiser: Denoiser,
    samples: Samples,
    images: np.ndarray,
    features: np.ndarray | None,
    fid: FidSetup,
    latency_ms: float,
) -> Measures:
    labels = None if samples.labels is None else samples.labels.numpy()
    return Measures(
        **fid.scores(images, features),
        **fid.class_accuracy(images, labels),
        latency_ms_per_step=latency_ms,
        sampling_s_per_image=samples.seconds_per_image,
        calls_per_image=samples.calls_per_image,
        macs_per_image=macs_per_image(denoiser),
        params=count_params(denoiser),
        macs=count_macs(denoiser),
        size_bytes=weights_bytes(denoiser),
        sampler=denoiser.sampling.to_dict(),
        runtime=denoiser.runtime,
    )


def _paired(
    models: list[Denoiser], images: list[np.ndarray], features: list
) -> tuple[float | None, float | None, list[str]]:
    """PSNR and feature distance between the two sample sets where they share a trajectory: the
    same sampler run, or two samplers that draw no noise after x_T. Otherwise they mean nothing,
    and a note says why. ``features``: the two sets' FID features (None without a FID network)."""
    baseline, model = (m.sampling for m in models)
    if baseline == model or not (baseline.stochastic or model.stochastic):
        distance = None if features[0] is None else unit_feature_distance(*features)
        return psnr_db(images[0], images[1]), distance, []
    return (
        None,
        None,
        [
            f"no PSNR to the original: {baseline.describe()} and {model.describe()} draw fresh "
            "noise at different steps, so the two models' samples do not share trajectories"
        ],
    )


def evaluate(
    model: Denoiser,
    baseline: Denoiser | None = None,
    config: EvalConfig = EvalConfig(),
    command: str = "eval",
    model_name: str | None = None,
    transform_config: dict | None = None,
    processes: Processes | None = None,
) -> Evaluation:
    """Sample ``config.n`` images from each model with the same seeds and noise, then measure them.

    With a ``baseline`` the report compares it ("original") with ``model`` ("compressed"). Under
    ``accelerate launch`` every process must call it: they share the batches, and each gets the
    report one process would make, with its own latencies. ``processes=SINGLE``: the calling process
    does it all (where it evaluates alone, as the main one after a training run).
    """
    models = [baseline, model] if baseline is not None else [model]
    return evaluate_many(
        models,
        config,
        command,
        model_name,
        transform_config,
        compare=baseline is not None,
        processes=processes,
    )[-1]


def _share_text_states(models: list[Denoiser]) -> None:
    """Models compared side by side see the same prompts: a text model without its own (the
    pipeline a compressed artifact came from) takes the first model's that has them."""
    given = next((m for m in models if m.text_states is not None), None)
    if given is None:
        return
    for model in models:
        if model.text_states is None and model.cond_kind == "text":
            model.use_text_states(given.text_states, null=given.null_text_states)


def evaluate_many(
    models: list[Denoiser],
    config: EvalConfig = EvalConfig(),
    command: str = "eval",
    model_name: str | None = None,
    transform_config: dict | None = None,
    compare: bool = True,
    processes: Processes | None = None,
) -> list[Evaluation]:
    """``models[0]`` (the original) against each of the others, all sampled in one run (batches
    interleaved, same seeds and noise): one Evaluation per other model, sharing the original's
    measures. ``processes``: as for ``evaluate`` (default: all of this run's)."""
    processes = processes or current_processes()
    _share_text_states(models)
    device = models[-1].device
    fid = fid_setup(models[-1].sample_shape, config.inception_weights, config.fid_ref, str(device))
    latencies = step_latency_ms(models, config.latency_batch, repeats=config.latency_repeats)
    samples = _sample_interleaved(models, config, processes)
    images = [s.images.numpy() for s in samples]
    # once per sample set: FID and the feature distance to the original both read them
    features = [None if fid.features is None else fid.features(i) for i in images]
    measured = [
        _measures(m, s, i, f, fid, latency)
        for m, s, i, f, latency in zip(models, samples, images, features, latencies)
    ]
    if not compare:
        return [
            _evaluation(
                models,
                measured,
                images,
                None,
                fid,
                config,
                command,
                model_name,
                transform_config,
                processes,
            )
        ]
    return [
        _evaluation(
            [models[0], model],
            [measured[0], measures],
            [images[0], own],
            _paired([models[0], model], [images[0], own], [features[0], own_features]),
            fid,
            config,
            command,
            model_name,
            transform_config,
            processes,
        )
        for model, measures, own, own_features in zip(
            models[1:], measured[1:], images[1:], features[1:]
        )
    ]


def _evaluation(
    models, measured, images, paired, fid, config, command, model_name, transform_config, processes
) -> Evaluation:
    """The report of ``models`` (one, or the original and a compressed model) from their
    measures."""
    model, device = models[-1], models[-1].device
    notes = list(dict.fromkeys(note for m in models for note in m.notes))
    if processes.count > 1:
        notes.append(
            f"sampled by {processes.count} processes; time per image is the sum "
            "of their batch times / n, latency per step the main process's own"
        )
    delta = None
    if paired is not None:
        psnr, distance, paired_notes = paired
        delta = Delta.between(measured[0], measured[1], psnr, distance)
        notes += paired_notes
    report = Report(
        command=command,
        model=model_name or model.source,
        seed=config.seed,
        device=device.type,
        device_name=device_name(device),
        sampler={**model.sampling.to_dict(), "batch_size": config.batch_size},
        fid_features=fid.name,
        fid_samples=config.n,
        fid_reference_samples=fid.real.stats.count if fid.real else None,
        fid_floor=fid.real.floor if fid.real else None,
        fid_floor_samples=fid.real.half_size if fid.real else None,
        fid_unavailable=fid.unavailable_reason,
        latency={"batch_size": config.latency_batch, "repeats": config.latency_repeats},
        original=measured[0],
        compressed=measured[1] if delta else None,
        delta=delta,
        config=transform_config or {},
        eval_config=config.to_dict(),
        notes=notes,
    )
    return Evaluation(report, images)
