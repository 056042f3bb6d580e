"""Latency micro-benchmarks: one denoiser step per model and batch (PyTorch and ONNX Runtime), and
the Triton kernels against PyTorch on a GPU. Run with ``pytest bench --benchmark-only``
(``--benchmark-json``, ``--benchmark-compare``, ``--models DIR``); ``python -m bench.run`` reads
their JSON for its latency columns.

Each benchmark checks its output before it is timed (a fast wrong answer is not a result).
"""

from __future__ import annotations

import pytest
import torch

import accel


def _synchronized(fn, device: torch.device):
    """``fn`` waiting for the GPU, so the wall clock pytest-benchmark reads covers the work."""
    if device.type != "cuda":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return call


def test_denoiser_step(benchmark, model_to_time):
    label, source, batch = model_to_time
    device = torch.device(
        "cuda" if torch.cuda.is_available() and not source.endswith(".onnx") else "cpu"
    )
    model = accel.load(source, device)
    inputs = model.example_inputs(batch)
    benchmark.extra_info.update(
        model=label,
        batch=batch,
        runtime=model.transforms[-1]["name"]
        if model.transforms and model.transforms[-1]["name"] == "export"
        else "pytorch",
    )
    with torch.inference_mode():
        assert torch.isfinite(model(*inputs)).all()
        benchmark(_synchronized(lambda: model(*inputs), device))


# SD1.5 shapes at batch 2 (classifier-free guidance, 64x64 latent): the largest GroupNorm+SiLU, and
# self-attention at 64x64 (head dim 40) and 16x16 (head dim 160)
GROUP_NORM_SHAPES = [(2, 320, 64, 64), (2, 1280, 16, 16)]
ATTENTION_SHAPES = [(2, 8, 4096, 4096, 40), (2, 8, 256, 256, 160)]


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["triton", "pytorch"])
@pytest.mark.parametrize("shape", GROUP_NORM_SHAPES, ids=str)
def test_group_norm_silu(benchmark, shape, implementation):
    import torch.nn.functional as F

    from accel.kernels import group_norm, group_norm_reference

    x = torch.randn(shape, device="cuda", dtype=torch.float16)
    weight, bias = torch.randn(shape[1], device="cuda"), torch.randn(shape[1], device="cuda")
    if implementation == "triton":

        def run():
            return group_norm(x, 32, weight, bias, silu=True)
    else:

        def run():
            return F.silu(F.group_norm(x, 32, weight, bias))

    torch.testing.assert_close(
        run(), group_norm_reference(x, 32, weight, bias, silu=True), atol=2e-2, rtol=2e-2
    )
    benchmark.extra_info.update(
        kernel="group_norm_silu", shape=list(shape), implementation=implementation
    )
    benchmark(_synchronized(run, x.device))


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["triton", "pytorch"])
@pytest.mark.parametrize("shape", ATTENTION_SHAPES, ids=str)
def test_attention(benchmark, shape, implementation):
    import torch.nn.functional as F

    from accel.kernels import attention, attention_reference

    batch, heads, len_q, len_k, head_dim = shape
    q, k, v = (
        torch.randn(batch, heads, n, head_dim, device="cuda", dtype=torch.float16)
        for n in (len_q, len_k, len_k)
    )
    run = (
        (lambda: attention(q, k, v))
        if implementation == "triton"
        else (lambda: F.scaled_dot_product_attention(q, k, v))
    )
    torch.testing.assert_close(run(), attention_reference(q, k, v), atol=2e-2, rtol=2e-2)
    benchmark.extra_info.update(
        kernel="attention", shape=list(shape), implementation=implementation
    )
    benchmark(_synchronized(run, q.device))
