"""``--prompts FILE``: the text states a text-conditioned denoiser is calibrated, trained and
evaluated on, and the empty prompt's, which classifier-free guidance runs as the unconditional half.

A text file (one prompt per line) goes through the pipeline's own tokenizer and text encoder, as the
pipeline's ``encode_prompt`` does (padded to the tokenizer's length, the encoder's last hidden
state); a ``.safetensors`` file with a ``text_states`` tensor (prompts x tokens x width), and
optionally ``null_text_states`` (the empty prompt's, tokens x width), is taken as it is, for a model
without its pipeline (a bare transformer folder, an exported graph).
"""

from __future__ import annotations

from pathlib import Path

import torch

from accel.core.errors import AccelError, one_line
from accel.core.files import read_json_object
from accel.core.weights import NULL_STATES_KEY, STATES_KEY

PIPELINE_INDEX = "model_index.json"


def text_states(
    prompts_file: str | Path, model_dir: Path | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The states of the prompts in ``prompts_file`` and the empty prompt's (None where a stored
    file has none), through the pipeline around ``model_dir`` (a model folder, or a pipeline's
    unet/ or transformer/) where the file holds text."""
    path = Path(prompts_file)
    if not path.is_file():
        raise AccelError(f"--prompts {path}: no such file")
    if path.suffix == ".safetensors":
        return stored_states(path)
    prompts = read_prompts(path)
    pipeline = pipeline_folder(model_dir)
    if pipeline is None:
        raise AccelError(
            f"--prompts {path}: {model_dir} is not inside a pipeline folder with a text encoder; "
            f"give the pipeline folder as --model, or a .safetensors file with '{STATES_KEY}'"
        )
    states = encode_prompts(pipeline, [*prompts, ""])
    return states[:-1], states[-1]


def read_prompts(path: Path) -> list[str]:
    """One prompt per non-empty line of a UTF-8 text file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise AccelError(f"--prompts {path} is not UTF-8 text (one prompt per line)")
    if "\x00" in text:
        raise AccelError(f"--prompts {path} is not text (it holds NUL bytes): one prompt per line")
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise AccelError(f"--prompts {path} holds no prompt: write one per line")
    return prompts


def stored_states(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own types for a damaged file
        raise AccelError(f"--prompts {path} is not a readable safetensors file ({one_line(error)})")
    if STATES_KEY not in tensors:
        raise AccelError(
            f"--prompts {path} has no '{STATES_KEY}' tensor (prompts x tokens x width); it holds "
            f"{', '.join(tensors) or 'nothing'}"
        )
    return tensors[STATES_KEY], tensors.get(NULL_STATES_KEY)


def pipeline_folder(model_dir: Path | None) -> Path | None:
    """The diffusers pipeline folder ``model_dir`` is or sits in, if it has a text encoder."""
    if model_dir is None:
        return None
    for folder in (model_dir, model_dir.parent):
        if (folder / PIPELINE_INDEX).is_file() and (folder / "text_encoder").is_dir():
            return folder
    return None


@torch.inference_mode()
def encode_prompts(pipeline: Path, prompts: list[str], batch: int = 16) -> torch.Tensor:
    """The text encoder's last hidden state for each prompt, padded to the tokenizer's length."""
    tokenizer, encoder = (
        _transformers_part(pipeline, "tokenizer"),
        _transformers_part(pipeline, "text_encoder"),
    )
    states = []
    for first in range(0, len(prompts), batch):
        ids = tokenizer(
            prompts[first : first + batch],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        states.append(encoder(ids)[0].float())
    return torch.cat(states)


def _transformers_part(pipeline: Path, part: str):
    """The pipeline's tokenizer or text encoder, of the transformers class model_index.json
    names."""
    try:
        import transformers
    except ImportError:
        raise AccelError(
            "prompts through a pipeline need transformers (pip install 'accel[pipelines]')"
        )
    entry = read_json_object(pipeline / PIPELINE_INDEX).get(part)
    if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == "transformers"):
        raise AccelError(f"{pipeline / PIPELINE_INDEX} names no transformers {part}: {entry!r}")
    try:
        return getattr(transformers, entry[1]).from_pretrained(
            pipeline / part, local_files_only=True
        )
    except Exception as error:  # transformers raises many types for a folder it cannot read
        raise AccelError(
            f"cannot load the pipeline's {part} from {pipeline / part}: {one_line(error)}"
        )
