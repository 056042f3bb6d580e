"""The built-in reference models, both trained by accel's own loop on the digits that ship inside
scikit-learn, weights committed:

- ``digits``: an unconditional diffusers UNet2DModel (1.6M parameters). Small enough to sample 2,000
  images at 50 DDIM steps in about 1.5 minutes on 2 CPU cores, and it has what every compression
  technique acts on: GroupNorm, self-attention at 8x8 and 4x4, skip concatenations in the decoder, a
  time embedding.
- ``digits-dit``: a class-conditional DiTTransformer2DModel (adaLN-Zero, patch 2, 6 blocks of width
  128, 2.1M parameters) trained with 10% label dropout as in DiT, so one network is both the
  conditional and the unconditional model that classifier-free guidance combines. Its folder carries
  ``sampling.json``: DDIM 50 steps, labels cycling over the ten classes, guidance 1 (none: see
  REFERENCES for what higher scales measured).

``train_reference`` retrains either with the committed settings (fixed seed); the weights match the
committed ones only on the same machine and library versions.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from accel.core.files import atomic_dir, ensure_writable_dir
from accel.core.processes import current_processes
from accel.core.sampling_spec import SamplingSpec
from accel.data import DIGITS_SHAPE, digits_images, digits_split
from accel.train import ClassLabels, NoisePrediction, TrainConfig, loss_curve, train

MODELS_DIR = Path(__file__).parent
SAMPLING_FILE = "sampling.json"  # the sampler a diffusers folder is meant to be run with
DIGITS_CLASSES = 10


@dataclass(frozen=True)
class Reference:
    name: str
    network_class: str  # a diffusers model class
    network_config: dict
    scheduler_config: dict
    training: TrainConfig
    data: str  # what it is trained on, in words
    sampling: SamplingSpec | None = None  # written as sampling.json; None: the default sampler
    label_dropout: float = 0.0  # > 0: class-conditional, trained for classifier-free guidance

    @property
    def folder(self) -> Path:
        return MODELS_DIR / self.name

    def build(self) -> torch.nn.Module:
        import diffusers

        network = getattr(diffusers, self.network_class)(**self.network_config)
        if self.label_dropout:
            _drop_labels_only_in_the_task(network)
        return network

    def forward_of(self, module):
        if self.label_dropout:
            return lambda x, t, cond: module(x, timestep=t, class_labels=cond).sample
        return lambda x, t, cond: module(x, t).sample

    def task(self) -> NoisePrediction:
        if not self.label_dropout:
            images, _ = digits_images()
            return NoisePrediction(images, self.scheduler_config)
        images, labels = digits_images()
        train_index, _ = digits_split()
        null = self.network_config["num_embeds_ada_norm"]
        return NoisePrediction(
            images[train_index],
            self.scheduler_config,
            labels=ClassLabels(labels[train_index], null, self.label_dropout),
        )


def _drop_labels_only_in_the_task(network: torch.nn.Module) -> None:
    """diffusers' LabelEmbedding drops labels itself in training mode, drawing from the global
    generator, independently in each DiT block; the task drops them instead (one draw per image,
    from the step's own generator, so a resumed run repeats it). The null class's embedding row
    stays: it exists because the network was built with a dropout probability."""
    from diffusers.models.embeddings import LabelEmbedding

    for module in network.modules():
        if isinstance(module, LabelEmbedding):
            module.dropout_prob = 0.0


UNET_CONFIG = dict(
    sample_size=DIGITS_SHAPE[1],
    in_channels=DIGITS_SHAPE[0],
    out_channels=DIGITS_SHAPE[0],
    layers_per_block=1,
    block_out_channels=(24, 48, 96),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    attention_head_dim=16,
)

# The cosine schedule keeps more signal at high noise than the linear one, which matters at 16x16.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="epsilon",
    clip_sample=True,
)

# The committed weights: 5,000 steps of batch 128, AdamW at 2e-3 with 200 warm-up steps and EMA
# 0.999.
REFERENCE_TRAINING = TrainConfig(
    steps=5000, batch_size=128, lr=2e-3, warmup_steps=200, ema_decay=0.999, checkpoint_every=250
)

DIT_CONFIG = dict(
    sample_size=DIGITS_SHAPE[1],
    in_channels=DIGITS_SHAPE[0],
    out_channels=DIGITS_SHAPE[0],
    patch_size=2,  # 64 tokens of 2x2 pixels
    num_layers=6,
    num_attention_heads=4,
    attention_head_dim=32,  # width 128
    num_embeds_ada_norm=DIGITS_CLASSES,  # class 10 is the null class
    norm_type="ada_norm_zero",
)

# DiT's own schedule: linear betas 1e-4 to 0.02 over 1,000 steps. No clipping of x0 while
# sampling, as DiT's pipeline: DDIM clips the x0 of a guided eps but steps with that eps unclipped,
# and the mismatch wrecked guided samples (100 samples, DDIM 20, guidance 3: class accuracy 0.65
# with clipping, 1.00 without; at guidance 1 both 0.99). Training does not read it.
DIT_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=0.0001,
    beta_end=0.02,
    prediction_type="epsilon",
    clip_sample=False,
)

# 6,000 steps of batch 128 (about 50 minutes on 2 CPU cores): a transformer this small needs a
# higher rate than DiT's 1e-4 to converge in that budget
DIT_TRAINING = TrainConfig(
    steps=6000, batch_size=128, lr=1e-3, warmup_steps=300, ema_decay=0.999, checkpoint_every=250
)

DIGITS_DATA = "sklearn load_digits, 1797 images, 8x8 bilinear-upsampled to 16x16, scaled to [-1, 1]"

REFERENCES = {
    "digits": Reference(
        "digits", "UNet2DModel", UNET_CONFIG, SCHEDULER_CONFIG, REFERENCE_TRAINING, DIGITS_DATA
    ),
    "digits-dit": Reference(
        "digits-dit",
        "DiTTransformer2DModel",
        DIT_CONFIG,
        DIT_SCHEDULER_CONFIG,
        DIT_TRAINING,
        "the class-stratified training split (80%) of " + DIGITS_DATA + ", with their labels",
        # Unguided by default: at DDIM 50 (500 samples) guidance raised class accuracy from 0.978
        # to 1.0 but FID from 15.6 to 77.5 at 1.5 and 154.8 at 2.0 (every sample of a class
        # alike: the model is already near-perfectly conditional, so guidance only narrows each
        # class). `--guidance` turns it on.
        sampling=SamplingSpec(guidance=1.0),
        label_dropout=0.1,
    ),
}
REFERENCE_DIR = REFERENCES["digits"].folder


def build_reference_unet():
    return REFERENCES["digits"].build()


def build_noise_scheduler(reference: Reference = REFERENCES["digits"]):
    from diffusers import DDPMScheduler

    return DDPMScheduler(**reference.scheduler_config)


def _record(reference: Reference, config: TrainConfig, result) -> dict:
    """The training record committed beside the weights."""
    import diffusers

    return {
        "config": config.to_dict(),
        "network_class": reference.network_class,
        "network_config": {
            k: list(v) if isinstance(v, tuple) else v for k, v in reference.network_config.items()
        },
        "scheduler_config": reference.scheduler_config,
        "data": reference.data,
        "label_dropout": reference.label_dropout,
        "loss_per_tenth_of_training": loss_curve(result.losses),
        "final_loss_mean_last_200": round(sum(result.losses[-200:]) / len(result.losses[-200:]), 5),
        "wall_time_s": round(result.elapsed_s, 1),
        "processes": result.processes,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "params": sum(p.numel() for p in result.network.parameters()),
    }


def train_reference(
    out_dir: str | Path,
    config: TrainConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    model: str = "digits",
) -> dict:
    """Train the reference model ``model`` with accel's training loop and write it as a diffusers
    folder (plus ``training.json``) to ``out_dir``; ``config`` defaults to the committed settings.

    A non-empty ``out_dir`` is refused unless ``overwrite``. Work happens in ``<out_dir>.partial``;
    an interrupted run resumes from its last checkpoint there, and ``out_dir`` appears only when
    training is complete. Under ``accelerate launch`` every process trains and the main one writes.
    """
    reference = REFERENCES[model]
    config = config or reference.training
    out_dir = ensure_writable_dir(out_dir, overwrite)
    work_dir = out_dir.with_name(out_dir.name + ".partial")
    work_dir.mkdir(exist_ok=True)
    torch.manual_seed(config.seed)
    result = train(
        reference.build(),
        reference.task(),
        config,
        work_dir,
        run={"job": "train-reference", "model": model, "config": config.to_dict()},
        forward_of=reference.forward_of,
        desc=f"train {model}",
        progress=progress,
    )
    record = _record(reference, config, result)
    if current_processes().is_main:
        with atomic_dir(out_dir, overwrite) as staging:
            result.network.save_pretrained(staging, safe_serialization=True)
            build_noise_scheduler(reference).save_config(staging)
            if reference.sampling is not None:
                sampling = json.dumps(reference.sampling.to_dict(), indent=2) + "\n"
                (staging / SAMPLING_FILE).write_text(sampling)
            (staging / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        shutil.rmtree(work_dir)
    return record
