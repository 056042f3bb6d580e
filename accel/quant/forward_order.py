"""The order in which a forward pass first calls a network's submodules (layer planning and
reconstruction both walk the network in it)."""

from __future__ import annotations

import torch
import torch.nn as nn


def forward_order(network: nn.Module, names: list[str], run) -> list[str]:
    """``names`` (submodules of ``network``) in the order ``run(network)`` first calls them."""
    order: list[str] = []
    hooks = [
        network.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: order.append(n))
        for n in names
    ]
    try:
        with torch.no_grad():
            run(network)
    finally:
        for hook in hooks:
            hook.remove()
    return list(dict.fromkeys(order))
