"""A denoiser's weights as an artifact stores them, and back.

The stored form is the network's state dict, passed through the ``pack_state`` of every transform
applied to it, in order (quantization stores integer codes instead of float weights); loading runs
``unpack_state`` in reverse order and then a strict ``load_state_dict``, so weights that do not fit
the rebuilt structure are refused in one line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from accel.core import registry
from accel.core.errors import AccelError, one_line

STATES_KEY = "text_states"  # a text model's prompts' states, as in a --prompts embeddings file
NULL_STATES_KEY = "null_text_states"  # the empty prompt's (guidance), where they are known


@torch.no_grad()
def stored_state(denoiser) -> registry.State:
    state = {
        key: value.detach().contiguous().cpu()
        for key, value in denoiser.module.state_dict().items()
    }
    for transform in registry.applied(denoiser):
        if transform.pack_state is not None:
            state = transform.pack_state(denoiser.module, state)
    return state


def conditioning_state(denoiser) -> dict[str, torch.Tensor]:
    """The text states a text model samples with, by their stored names (empty for other models):
    with the weights, what a calibration set or a resumed chain was made from."""
    states = {STATES_KEY: denoiser.text_states, NULL_STATES_KEY: denoiser.null_text_states}
    return {key: value.contiguous() for key, value in states.items() if value is not None}


@torch.no_grad()
def load_stored_state(denoiser, state: registry.State, source: Path) -> None:
    state = dict(state)
    try:
        for transform in reversed(registry.applied(denoiser)):
            if transform.unpack_state is not None:
                state = transform.unpack_state(denoiser.module, state)
        denoiser.module.load_state_dict(state, strict=True)
    # another model's weights
    except (
        AccelError,
        RuntimeError,
        KeyError,
        ValueError,
        AttributeError,
    ) as error:
        raise AccelError(
            f"{source} does not fit the model its folder describes ({one_line(error)})"
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
