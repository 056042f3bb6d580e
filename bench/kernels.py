"""Kernel and denoiser-step timings on this GPU, against PyTorch, beside the GPU's ceilings.

    python -m bench.kernels              # everything; JSON under bench/results/, table on stdout
    python -m bench.kernels --no-unet    # kernels only (skips building and compiling SD1.5's UNet)
    python -m bench.kernels --smoke --out x.json  # CPU, tiny shapes, Triton interpreter: checks
                                                  # the script runs end to end; timings mean nothing

Shapes are SD1.5's at batch 2 (classifier-free guidance, 64x64 latent) and DiT-XL/2's (256 tokens,
head dim 72). Every timing is the median of many CUDA-event-timed calls after warm-up
(triton.testing.do_bench); inputs rotate over several buffers larger than L2 together, so
memory-bound kernels are not timed from cache. Each row is checked against its PyTorch baseline
before it is timed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
L2_FLUSH_BYTES = 256 * 2**20  # rotate inputs over more than this (H100 L2: 50 MB, H200: 50 MB)

GROUP_NORM_SHAPES = [
    (2, 320, 64, 64),
    (2, 640, 64, 64),
    (2, 960, 64, 64),
    (2, 640, 32, 32),
    (2, 1280, 32, 32),
    (2, 1280, 16, 16),
    (2, 2560, 8, 8),
]
# (label, batch, heads, query length, key length, head dim)
ATTENTION_SHAPES = [
    ("SD1.5 self 64x64", 2, 8, 4096, 4096, 40),
    ("SD1.5 cross 64x64", 2, 8, 4096, 77, 40),
    ("SD1.5 self 32x32", 2, 8, 1024, 1024, 80),
    ("SD1.5 cross 32x32", 2, 8, 1024, 77, 80),
    ("SD1.5 self 16x16", 2, 8, 256, 256, 160),
    ("SD1.5 cross 16x16", 2, 8, 256, 77, 160),
    ("DiT-XL/2", 2, 16, 256, 256, 72),
    ("d64", 2, 16, 4096, 4096, 64),
    ("d128", 2, 8, 4096, 4096, 128),
]
SMOKE_GROUP_NORM_SHAPES = [(1, 32, 4, 4)]
SMOKE_ATTENTION_SHAPES = [("smoke self", 1, 1, 20, 20, 40), ("smoke cross", 1, 1, 20, 7, 72)]

GOALS = {
    "group_norm_speedup": 1.5,
    "group_norm_copy_fraction": 0.70,
    "attention_pow2_ratio": 0.9,
    "attention_other_ratio": 1.0,
    "unet_vs_eager": 1.8,
    "unet_vs_compile": 1.2,
}


@dataclass
class Timer:
    """Median milliseconds of ``fn()``: CUDA events via do_bench on a GPU, the host clock in smoke
    mode."""

    cuda: bool

    def __call__(self, fn) -> float:
        if self.cuda:
            from triton.testing import do_bench

            return do_bench(fn, warmup=100, rep=500, return_mode="median")
        start = time.perf_counter()  # smoke mode: one call, to check the path runs
        fn()
        return (time.perf_counter() - start) * 1e3


def rotating(make, nbytes: int, cuda: bool) -> list:
    """Enough independent input sets that cycling through them overflows L2."""
    count = max(2, -(-L2_FLUSH_BYTES // max(nbytes, 1))) if cuda else 1
    return [make() for _ in range(min(count, 64))]


def cycle(sets, fn):
    state = {"i": 0}

    def call():
        state["i"] = (state["i"] + 1) % len(sets)
        return fn(*sets[state["i"]])

    return call


def ceilings(timer: Timer, device) -> dict:
    """Measured copy bandwidth (bytes read + written) and fp16 matrix-product rate of this GPU."""
    import torch

    n = 2**28 if device.type == "cuda" else 2**20
    src, dst = (
        torch.randn(n, device=device, dtype=torch.float16),
        torch.empty(n, device=device, dtype=torch.float16),
    )
    copy_ms = timer(lambda: dst.copy_(src))
    size = 8192 if device.type == "cuda" else 256
    a, b = (torch.randn(size, size, device=device, dtype=torch.float16) for _ in range(2))
    mm_ms = timer(lambda: a @ b)
    return {
        "copy_gb_s": 2 * n * 2 / copy_ms / 1e6,
        "matmul_fp16_tflop_s": 2 * size**3 / mm_ms / 1e9,
        "copy_bytes": 2 * n * 2,
        "matmul_size": size,
    }


def group_norm_rows(timer: Timer, device, shapes, ceiling: dict) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from accel.kernels import group_norm

    def eager(x, w, b):
        return F.silu(F.group_norm(x, 32, w, b, 1e-5))

    rows = []
    for shape in shapes:
        for channels_last in (False, True):

            def make():
                x = torch.randn(shape, device=device, dtype=torch.float16)
                if channels_last:
                    x = x.to(memory_format=torch.channels_last)
                return x, torch.randn(shape[1], device=device), torch.randn(shape[1], device=device)

            nbytes = 2 * torch.Size(shape).numel() * 2  # read x once, write y once
            sets = rotating(make, nbytes, device.type == "cuda")
            x, w, b = sets[0]
            ours = group_norm(x, 32, w, b, 1e-5, silu=True)
            error = (
                (ours.float() - eager(x, w, b).float()).norm() / eager(x, w, b).float().norm()
            ).item()
            ours_ms = timer(cycle(sets, lambda x, w, b: group_norm(x, 32, w, b, 1e-5, silu=True)))
            eager_ms = timer(cycle(sets, eager))
            gb_s = nbytes / ours_ms / 1e6
            rows.append(
                {
                    "shape": list(shape),
                    "layout": "channels_last" if channels_last else "nchw",
                    "dtype": "fp16",
                    "triton_ms": ours_ms,
                    "eager_ms": eager_ms,
                    "speedup": eager_ms / ours_ms,
                    "triton_gb_s": gb_s,
                    "eager_gb_s": nbytes / eager_ms / 1e6,
                    "copy_fraction": gb_s / ceiling["copy_gb_s"],
                    "rel_error": error,
                }
            )
    return rows


def attention_rows(timer: Timer, device, shapes, ceiling: dict) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from accel.kernels import attention

    rows = []
    for label, batch, heads, len_q, len_k, head_dim in shapes:

        def make():
            return [
                torch.randn(batch, heads, length, head_dim, device=device, dtype=torch.float16)
                for length in (len_q, len_k, len_k)
            ]

        q, k, v = make()
        expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        error = ((attention(q, k, v).float() - expected).norm() / expected.norm()).item()
        nbytes = 2 * (2 * batch * heads * len_q * head_dim + 2 * batch * heads * len_k * head_dim)
        sets = rotating(make, nbytes, device.type == "cuda")
        flops = 4 * batch * heads * len_q * len_k * head_dim
        ours_ms = timer(cycle(sets, attention))
        sdpa_ms = timer(cycle(sets, F.scaled_dot_product_attention))
        rows.append(
            {
                "label": label,
                "batch": batch,
                "heads": heads,
                "len_q": len_q,
                "len_k": len_k,
                "head_dim": head_dim,
                "dtype": "fp16",
                "triton_ms": ours_ms,
                "sdpa_ms": sdpa_ms,
                "ratio_vs_sdpa": sdpa_ms / ours_ms,
                "triton_tflop_s": flops / ours_ms / 1e9,
                "sdpa_tflop_s": flops / sdpa_ms / 1e9,
                "matmul_fraction": flops / ours_ms / 1e9 / ceiling["matmul_fp16_tflop_s"],
                "rel_error": error,
            }
        )
    return rows


def sd15_unet(smoke: bool):
    """An SD1.5-architecture UNet2DConditionModel with random weights (latency does not depend on
    them)."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    if smoke:
        return UNet2DConditionModel(
            sample_size=8,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=2,
            norm_num_groups=8,
        ).eval()
    return UNet2DConditionModel(
        sample_size=64, cross_attention_dim=768, attention_head_dim=8
    ).eval()  # SD1.5 config


def unet_rows(timer: Timer, device, smoke: bool) -> list[dict]:
    """One denoiser step at batch 2 in fp16: eager, torch.compile, accel optimize (with and without
    CUDA graph)."""
    import copy

    import torch

    import accel

    dtype = torch.float16
    base = sd15_unet(smoke)
    size, tokens = base.config.sample_size, 77
    x = torch.randn(2, base.config.in_channels, size, size, device=device, dtype=dtype)
    text = torch.randn(2, tokens, base.config.cross_attention_dim, device=device, dtype=dtype)
    t = torch.full((2,), 500, device=device)

    def denoiser(config=None):
        model = accel.load(copy.deepcopy(base), device)
        if config is None:
            model.module.to(dtype)
        else:
            accel.optimize_(model, config)
        return model

    eager = denoiser()
    expected = eager(x, t, text).float()
    variants = [("eager", eager)]
    if device.type == "cuda":
        compiled = denoiser()
        compiled.module = torch.compile(compiled.module)
        variants.append(("torch.compile", compiled))
    variants.append(
        ("accel optimize", denoiser(accel.OptimizeConfig(dtype="fp16", backend="triton")))
    )
    if device.type == "cuda":
        variants.append(
            (
                "accel optimize + CUDA graph",
                denoiser(accel.OptimizeConfig(dtype="fp16", cuda_graph=True)),
            )
        )
    rows = []
    with torch.inference_mode():
        for name, model in variants:
            out = model(x, t, text).float()  # also compiles / autotunes / captures before timing
            error = ((out - expected).norm() / expected.norm()).item()
            rows.append(
                {
                    "variant": name,
                    "ms_per_step": timer(lambda: model(x, t, text)),
                    "rel_error": error,
                }
            )
    for row in rows:
        row["speedup_vs_eager"] = rows[0]["ms_per_step"] / row["ms_per_step"]
    return rows


def goals(results: dict) -> dict:
    """Each issue-4 speed goal with the measured value; the worst case over the shapes it covers."""
    if results["smoke"]:
        return {"status": "unmeasured: smoke run on CPU"}
    gn, attn, unet = (
        results["group_norm"],
        results["attention"],
        {r["variant"]: r for r in results["unet"]},
    )
    pow2 = [r["ratio_vs_sdpa"] for r in attn if r["head_dim"] in (64, 128)]
    other = [r["ratio_vs_sdpa"] for r in attn if r["head_dim"] not in (64, 128)]
    measured = {
        "group_norm_speedup": min(r["speedup"] for r in gn),
        "group_norm_copy_fraction": min(r["copy_fraction"] for r in gn),
        "attention_pow2_ratio": min(pow2),
        "attention_other_ratio": min(other),
    }
    if unet:
        best = max(
            (r for name, r in unet.items() if name.startswith("accel")),
            key=lambda r: r["speedup_vs_eager"],
        )
        measured["unet_vs_eager"] = best["speedup_vs_eager"]
        if "torch.compile" in unet:
            measured["unet_vs_compile"] = unet["torch.compile"]["ms_per_step"] / best["ms_per_step"]
    return {
        name: {"measured": value, "goal": GOALS[name], "met": value >= GOALS[name]}
        for name, value in measured.items()
    }


def environment(device) -> dict:
    import diffusers
    import torch
    import triton

    info = {
        "device": device.type,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=props.name,
            sm_count=props.multi_processor_count,
            cuda=torch.version.cuda,
            driver=_nvidia_smi("driver_version"),
        )
    else:
        info.update(
            device_name=platform.processor() or "cpu",
            interpreter=os.environ.get("TRITON_INTERPRET"),
        )
    return info


def _git(*args) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=HERE, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _nvidia_smi(field: str) -> str | None:
    try:
        return (
            subprocess.run(
                ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[0]
        )
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None


def markdown(results: dict) -> str:
    env, ceil = results["environment"], results["ceilings"]
    lines = [
        f"# Kernel benchmark: {env['device_name']} (torch {env['torch']}, triton {env['triton']}, "
        f"commit {str(env['commit'])[:10]})",
        "",
        f"Ceilings: copy {ceil['copy_gb_s']:.0f} GB/s, fp16 "
        f"matmul {ceil['matmul_fp16_tflop_s']:.0f} TFLOP/s",
        "",
        "| GroupNorm+SiLU fp16 | layout | triton ms | eager ms | speedup | GB/s | of copy |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['shape']} | {r['layout']} | {r['triton_ms']:.4f} | {r['eager_ms']:.4f} "
        f"| {r['speedup']:.2f} | {r['triton_gb_s']:.0f} | {r['copy_fraction']:.0%} |"
        for r in results["group_norm"]
    ]
    lines += [
        "",
        "| attention fp16 | Lq x Lk, d | triton ms | SDPA ms | vs SDPA | TFLOP/s | SDPA TFLOP/s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['label']} | {r['len_q']}x{r['len_k']}, {r['head_dim']} | "
        f"{r['triton_ms']:.4f} | {r['sdpa_ms']:.4f} | {r['ratio_vs_sdpa']:.2f} "
        f"| {r['triton_tflop_s']:.0f} | {r['sdpa_tflop_s']:.0f} |"
        for r in results["attention"]
    ]
    if results["unet"]:
        lines += ["", "| UNet step, batch 2 | ms | vs eager | rel. error |", "|---|---|---|---|"]
        lines += [
            f"| {r['variant']} | {r['ms_per_step']:.3f} | "
            f"{r['speedup_vs_eager']:.2f} | {r['rel_error']:.1e} |"
            for r in results["unet"]
        ]
    lines += ["", "Goals: " + json.dumps(results["goals"])]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.kernels", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, Triton interpreter")
    parser.add_argument("--no-unet", action="store_true", help="skip the end-to-end UNet step")
    parser.add_argument(
        "--out", help="JSON path (default: bench/results/kernels-<gpu>-<date>.json)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before accel.kernels is first imported
    import torch

    from accel.core.files import write_text

    if not args.smoke and not torch.cuda.is_available():
        print(
            "bench.kernels: needs a CUDA GPU (speed on a CPU "
            "means nothing); --smoke checks the script on CPU",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cuda" if not args.smoke else "cpu")
    timer = Timer(cuda=device.type == "cuda")
    env = environment(device)
    ceil = ceilings(timer, device)
    results = {
        "environment": env,
        "smoke": args.smoke,
        "ceilings": ceil,
        "group_norm": group_norm_rows(
            timer, device, SMOKE_GROUP_NORM_SHAPES if args.smoke else GROUP_NORM_SHAPES, ceil
        ),
        "attention": attention_rows(
            timer, device, SMOKE_ATTENTION_SHAPES if args.smoke else ATTENTION_SHAPES, ceil
        ),
        "unet": [] if args.no_unet else unet_rows(timer, device, args.smoke),
    }
    results["goals"] = goals(results)
    out = (
        Path(args.out)
        if args.out
        else (
            HERE
            / "results"
            / f"kernels-{env['device_name'].replace(' ', '_')}-{env['date'][:10]}.json"
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
