"""A Stable Diffusion 1.5 pipeline folder around the real-size UNet, so the pipeline path (a folder
with model_index.json, the UNet in unet/, its scheduler in scheduler/, prompts through the
pipeline's own text encoder) is the one a user's folder takes.

Every network is randomly initialised from SD1.5's published configuration (sd15-unet.json). The
tokenizer is CLIP's byte-pair tokenizer over a vocabulary written here: single characters and no
merges, so a prompt becomes one token per character. CLIP's 49,408-token vocabulary is a download,
and a random text encoder gives no meaning to its tokens anyway: what is real is the shape of the
text states (77 x 768) the UNet attends to and the code path that makes them.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch

from accel.core.errors import AccelError
from accel.core.files import atomic_dir
from accel.models.architectures import architecture, at_resolution, narrowed

CHARACTERS = string.ascii_lowercase + string.digits + ".,!?'-"
START, END = "<|startoftext|>", "<|endoftext|>"


def vocabulary() -> dict[str, int]:
    """CLIP's BPE form: a character inside a word, the same character ending one (``</w>``), then
    the start and end tokens."""
    tokens = [*CHARACTERS, *(f"{c}</w>" for c in CHARACTERS), START, END]
    return {token: index for index, token in enumerate(tokens)}


def clip_tokenizer(max_length: int):
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as folder:
        vocab, merges = Path(folder) / "vocab.json", Path(folder) / "merges.txt"
        vocab.write_text(json.dumps(vocabulary()))
        merges.write_text("#version: 0.2\n")
        return CLIPTokenizer(str(vocab), str(merges), model_max_length=max_length)


def text_encoder(config: dict, width_divisor: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    ids = vocabulary()
    values = narrowed("CLIPTextConfig", config, width_divisor)
    return CLIPTextModel(
        CLIPTextConfig(
            **values,
            vocab_size=len(ids),
            bos_token_id=ids[START],
            eos_token_id=ids[END],
            pad_token_id=ids[END],
        )
    )


def write_sd15_pipeline(
    out: str | Path, width_divisor: int = 1, seed: int = 0, resolution_divisor: int = 1
) -> Path:
    """A StableDiffusionPipeline folder (unet, scheduler, text_encoder, tokenizer, vae; no safety
    checker) that diffusers' ``from_pretrained`` and ``accel.load`` read."""
    try:
        import transformers  # noqa: F401 (the text encoder and tokenizer are transformers')
    except ImportError:
        raise AccelError("a pipeline folder needs transformers (pip install 'accel[pipelines]')")
    import diffusers

    sd15 = architecture("sd15-unet")
    unet = sd15.build(width_divisor, seed, resolution_divisor)
    torch.manual_seed(seed + 1)
    pipeline = diffusers.StableDiffusionPipeline(
        vae=diffusers.AutoencoderKL.from_config(
            at_resolution(
                narrowed("AutoencoderKL", sd15.parts["vae"], width_divisor), resolution_divisor
            )
        ),
        text_encoder=text_encoder(sd15.parts["text_encoder"], width_divisor),
        tokenizer=clip_tokenizer(sd15.conditioning["tokens"]),
        unet=unet,
        scheduler=getattr(diffusers, sd15.scheduler["_class_name"]).from_config(sd15.scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with atomic_dir(out) as staging:
        pipeline.save_pretrained(staging, safe_serialization=True)
    return Path(out)
