"""Training checkpoints as a folder of safetensors (tensors) plus JSON (everything else).

Loading one runs no code, unlike a pickled ``torch.save`` file: a planted checkpoint is data, not a
program. A checkpoint is written with ``atomic_dir``, so an interrupted save leaves the previous one
in place.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from accel.core.errors import AccelError, one_line
from accel.core.files import atomic_dir, read_json_object

TENSORS, STATE = "tensors.safetensors", "state.json"


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], state: dict) -> None:
    from safetensors.torch import save_file

    Path(folder).parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder, overwrite=True) as staging:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(staging / TENSORS)
        )
        (staging / STATE).write_text(json.dumps(state) + "\n")


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(folder / TENSORS))
    except Exception as error:  # safetensors raises its own types for damaged files
        raise AccelError(
            f"checkpoint {folder} is damaged ({one_line(error)}); remove it to start over"
        )
    return tensors, read_json_object(folder / STATE)


def optimizer_state(
    optimizer: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state dict split into tensors (named ``prefix.<param>.<key>``) and JSON."""
    saved = optimizer.state_dict()
    tensors, values = {}, {}
    for index, per_param in saved["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{key}"] = value
            else:
                values[f"{index}.{key}"] = value
    return tensors, {"param_groups": saved["param_groups"], "values": values}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], saved: dict
) -> None:
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        if name.startswith(prefix + "."):
            index, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(index), {})[key] = tensor
    for name, value in saved["values"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
