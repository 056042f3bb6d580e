"""Replay the denoiser step as a CUDA graph: one launch from the CPU instead of hundreds of kernel launches.

At batch 1-2 an SD1.5 UNet step is a few milliseconds of GPU work spread over ~1000 kernels; launch overhead
is a large share of it (FIELD_NOTES.md: CUDA graphs are among the larger wins). One graph is captured per
input signature (shapes and dtypes) on first use; later calls copy their inputs into the graph's static
buffers, replay it, and return a copy of its output (the static output is overwritten by the next replay).
"""
from __future__ import annotations

from typing import Callable

import torch

from accel.errors import AccelError

WARMUP_CALLS = 3  # Triton autotuning and cuDNN algorithm search must happen before capture


class _Graph:
    def __init__(self, step: Callable, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None):
        self.inputs = [x.clone(), t.clone(), None if cond is None else cond.clone()]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                step(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = step(*self.inputs)

    def __call__(self, x, t, cond):
        for static, new in zip(self.inputs, (x, t, cond)):
            if static is not None:
                static.copy_(new)
        self.graph.replay()
        return self.output.clone()


class CudaGraphRunner:
    """Drop-in for ``Denoiser._eps`` (set as ``denoiser.runner``) that captures and replays CUDA graphs."""

    def __init__(self, denoiser):
        if denoiser.device.type != "cuda":
            raise AccelError(f"--cuda-graph needs the model on a CUDA device (it is on {denoiser.device})")
        self.step = denoiser._eps
        self.graphs: dict[tuple, _Graph] = {}

    @staticmethod
    def _signature(*tensors) -> tuple:
        return tuple(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in tensors)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        key = self._signature(x, t, cond)
        if key not in self.graphs:
            self.graphs[key] = _Graph(self.step, x, t, cond)
        return self.graphs[key](x, t, cond)
