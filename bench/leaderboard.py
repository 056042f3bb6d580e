"""The leaderboard: every method and chain on the built-in models in one table and one plot, each
row against its model's original (fp32, PyTorch, DDIM 50 at its own guidance)
sampled in the same benchmark run as the row.

    python -m bench.leaderboard          # from the full runs in bench/results/
                                         #   -> bench/report.md, .json, .png
    python -m bench.leaderboard --quick  # from the quick runs CI just made (bench/*_quick.json)
                                         #   -> bench/leaderboard_quick.md, .json, .png

It measures nothing itself: each benchmark (bench.run, bench.prune, bench.distill, bench.cache,
bench.compress and bench.peers on digits; bench.dit, bench.compress --model digits-dit and
bench.peers --model digits-dit on digits-dit; bench.ort_int8 on both) sampled its rows and its
original in one run, batches interleaved, and this reads their JSON. Speedup is always wall time
per image, original / row, from that run; fake-quantized PyTorch rows have none (float arithmetic
on the integer grid: their speed is in the ONNX Runtime rows). Peer rows are other tools' recipes
at accel's widths.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from accel.core.files import atomic_file, write_text
from accel.report import quality_speed_plot, table, to_json
from bench.common import HERE

COLUMNS = {
    "rank": "#",
    "model": "model",
    "method": "method",
    "family": "family",
    "runtime": "runs in",
    "calls_per_image": "calls/image",
    "fid": "FID",
    "fid_ratio": "FID ratio",
    "speedup": "speedup (time/image)",
    "size_ratio": "size ratio",
    "samples": "samples",
    "source": "from",
}


def _row(
    method: str,
    family: str,
    source: str,
    samples: int,
    fid,
    fid_ratio,
    speedup=None,
    size_ratio=None,
    calls: int = 50,
    runtime: str = "PyTorch",
    model: str = "digits",
) -> dict:
    return {
        "model": model,
        "method": method,
        "family": family,
        "runtime": runtime,
        "calls_per_image": calls,
        "fid": fid,
        "fid_ratio": fid_ratio,
        "speedup": speedup,
        "size_ratio": size_ratio,
        "samples": samples,
        "source": source,
    }


def quantization_rows(data: dict, source: str) -> list[dict]:
    """bench.run: the original, fewer-step samplers, the W4A8/W8A8 recipes (fake-quantized), the
    runtimes."""
    n, samplers = data["settings"]["n"], data["samplers"]
    original = samplers[0]
    out = [_row("original, DDIM 50", "original", source, n, original["fid"], 1.0, 1.0, 1.0)]
    out += [
        _row(
            r["model"].removeprefix("original, "),
            "sampler",
            source,
            n,
            r["fid"],
            r["fid_ratio"],
            r["speedup"],
            1.0,
            r["calls_per_image"],
        )
        for r in samplers[1:]
    ]
    ablation = data["ablation"]
    for r in ablation["rows"]:
        if r["name"].startswith("+ reconstruction") or r["name"].startswith("W8A8"):
            name = (
                "W4A8 (Q-Diffusion recipe)"
                if r["name"].startswith("+")
                else "W8A8 (Q-Diffusion recipe)"
            )
            out.append(
                _row(
                    name + ", fake-quantized",
                    "quantization",
                    source,
                    ablation["samples"],
                    r["fid"],
                    r["fid_ratio"],
                    size_ratio=r["size_bytes"] / data["runtimes"][0]["size_bytes"],
                )
            )
    size0 = data["runtimes"][0]["size_bytes"]
    out += [
        _row(
            f"{r['model']} ONNX, opset {r['opset']}",
            "export",
            source,
            n,
            r["fid"],
            r["fid_ratio"],
            r["speedup"],
            r["size_bytes"] / size0,
            r["calls_per_image"],
            r["runtime"],
        )
        for r in data["runtimes"]
        if r["runtime"] != "PyTorch"
    ]
    return out


def pruning_rows(data: dict, source: str) -> list[dict]:
    ablation = data["ablation"]
    return [
        _row(
            f"prune {r['name']}, fine-tuned {ablation['finetune_steps']} steps",
            "pruning",
            source,
            ablation["samples"],
            r["fid"],
            r["fid_ratio"],
            r["speedup"],
            r["params_ratio"],
        )
        for r in ablation["rows"]
    ]


def distillation_rows(data: dict, source: str) -> list[dict]:
    kept = ("progressive (v student)", "consistency (v student)", "teacher, plain DDIM")
    return [
        _row(
            f"{r['model']}, {r['steps']} steps",
            "sampler" if r["model"].startswith("teacher") else "distillation",
            source,
            data["settings"]["n"],
            r["fid"],
            r["fid_ratio"],
            r["speedup"],
            1.0,
            r["calls_per_image"],
        )
        for r in data["rows"]
        if r["model"] in kept and (r["steps"] in (4, 8) or "student" in r["model"])
    ]


def caching_rows(data: dict, source: str) -> list[dict]:
    out = []
    for r in data["rows"]:
        where = "uniform" if r["schedule"] == "uniform" else f"quadratic at {r['center']:g}"
        cached = r["cached"]
        out.append(
            _row(
                f"DeepCache every {r['interval']}, branch {r['branch']}, {where}",
                "caching",
                source,
                data["settings"]["n"],
                cached["fid"],
                cached["fid_ratio"],
                cached["speedup"],
                1.0,
            )
        )
    return out


def dit_rows(data: dict, source: str) -> list[dict]:
    """bench.dit: the guided transformer's original, guidance 1, its exported graphs, its caches and
    the plain sampler at each cache's MACs."""
    n = data["settings"]["n"]
    original = data["transforms"][0]
    size0 = original["size_bytes"]

    def family(name: str) -> str:
        if "ONNX" in name:
            return "export"
        if "cache" in name and not name.startswith("plain"):
            return "caching"
        return "sampler"

    rows = [
        _row(
            f"{r['model']}, {r['sampler']}",
            "sampler",
            source,
            n,
            r["fid"],
            r["fid_ratio"],
            r["speedup"],
            1.0,
            r["calls_per_image"],
            model="digits-dit",
        )
        for r in data["guidance"][1:]
    ]
    rows.append(
        _row(
            f"original, {original['sampler']}",
            "original",
            source,
            n,
            original["fid"],
            1.0,
            1.0,
            1.0,
            original["calls_per_image"],
            model="digits-dit",
        )
    )
    rows += [
        _row(
            r["model"],
            family(r["model"]),
            source,
            n,
            r["fid"],
            r["fid_ratio"],
            r["speedup"],
            r["size_bytes"] / size0,
            r["calls_per_image"],
            r["runtime"],
            model="digits-dit",
        )
        for r in data["transforms"][1:]
    ]
    return rows


def recipe_rows(data: dict, source: str) -> list[dict]:
    out = []
    model = data.get("model", "digits")  # runs before the DiT's had no model key
    # the original's guidance where the benchmark set one (the DiT recipes: against guided DDIM 50)
    against = f", original at w {data['guidance']:g}" if data.get("guidance") else ""
    for recipe in data["recipes"]:
        final = recipe["rows"][-1]
        stages = sum(row["stage_seconds"] is not None for row in recipe["rows"])
        minutes = recipe["total_s"] / 60
        name = f"recipe {recipe['recipe']} ({stages} stages, {minutes:.0f} min{against})"
        out.append(
            _row(
                name,
                "recipe",
                source,
                recipe["n"],
                final["fid"],
                final["fid_ratio"],
                final["speedup"],
                final["size_ratio"],
                final["calls_per_image"],
                final["runtime"],
                model=model,
            )
        )
    return out


def _peer_speedup(row: dict) -> float | None:
    if not row["packs_weights"]:
        return None
    return row["original_seconds_per_image"] / row["seconds_per_image"]


def peer_rows(data: dict, source: str) -> list[dict]:
    """bench.peers: the peers' recipes and accel's dynamic-scale row (its static rows repeat
    bench.run's). Speedup only for a peer that runs packed weights in PyTorch; Model Optimizer's
    rows and accel's are fake-quantized."""
    return [
        _row(
            f"{r['name']} ({r['layers']} layers)",
            "peer quantization",
            source,
            data["settings"]["n"],
            r["fid"],
            r["fid_ratio"],
            _peer_speedup(r),
            r["size_ratio"],
            model=data["model"],
        )
        for r in data["rows"]
        if not r["name"].startswith("accel ") or r.get("scales") == "dynamic"
    ]


def ort_int8_rows(data: dict, source: str) -> list[dict]:
    """bench.ort_int8: the fp32 graph, accel's W8A8 graphs in the form ONNX Runtime's CPU kernels
    fuse and its W4A4 graph, sampled in ONNX Runtime beside the original."""
    return [
        _row(
            # "accel W8A8, ort-cpu form" -> "W8A8 ONNX, ort-cpu form"
            re.sub(r"^accel (W\dA\d)", r"\1 ONNX", r["graph"].replace("fp32", "fp32 ONNX")),
            "export",
            source,
            data["settings"]["samples"],
            r["fid"],
            r["fid_ratio"],
            r["speedup"],
            r["size_ratio"],
            runtime="ONNX Runtime (CPUExecutionProvider)",
            model=r["model"],
        )
        for r in data["sampled"]
    ]


# benchmark -> (full result, quick result, reader)
SOURCES = {
    "bench.run": ("results/quant_digits_cpu.json", "quant_quick.json", quantization_rows),
    "bench.prune": ("results/prune_digits_cpu.json", "prune_quick.json", pruning_rows),
    "bench.distill": ("results/distill_digits_cpu.json", "distill_quick.json", distillation_rows),
    "bench.cache": ("results/cache_digits_cpu.json", "cache_quick.json", caching_rows),
    "bench.compress": ("results/compress_digits_cpu.json", "compress_quick.json", recipe_rows),
    "bench.dit": ("results/dit_digits_cpu.json", "dit_quick.json", dit_rows),
    "bench.peers": ("results/peers_digits_cpu.json", "peers_digits_quick.json", peer_rows),
    "bench.peers --model digits-dit": ("results/peers_digits-dit_cpu.json", None, peer_rows),
    "bench.ort_int8": ("results/ort_int8_cpu.json", None, ort_int8_rows),
    # full runs only: CI's chain test covers the DiT recipes' code (a quick run would add minutes)
    "bench.compress --model digits-dit": (
        "results/compress_dit_digits_cpu.json",
        None,
        recipe_rows,
    ),
}


def collect(quick: bool, here: Path = HERE) -> tuple[list[dict], list[str], list[str]]:
    """Every benchmark's rows, a line per source (its machine, threads, commit), and a line for each
    benchmark whose results are missing."""
    rows, sources, missing = [], [], []
    for bench, (full, quick_file, reader) in SOURCES.items():
        if quick and quick_file is None:
            continue
        path = here / (quick_file if quick else full)
        if not path.is_file():
            missing.append(
                f"{bench}: no {path.relative_to(here.parent)} (run `python -m {bench}"
                f"{' --quick' if quick else ''}`)"
            )
            continue
        data = json.loads(path.read_text())
        rows += reader(data, str(path.relative_to(here)))
        threads = ", ".join(f"{k} {v}" for k, v in data["threads"].items())
        sources.append(
            f"[{path.name}]({path.relative_to(here)}): {data['machine']}; "
            f"threads {threads}; commit {data['commit']}"
        )
    return rows, sources, missing


def ranked(rows: list[dict]) -> list[dict]:
    rows = sorted(
        rows,
        key=lambda r: (r["model"], r["family"] != "original", -(r["speedup"] or 0)),
    )
    return [{**row, "rank": rank} for rank, row in enumerate(rows)]


def markdown(
    rows: list[dict], sources: list[str], missing: list[str], plot: str, quick: bool
) -> str:
    shown = [{**row, "source": f"[{Path(row['source']).name}]({row['source']})"} for row in rows]
    lines = [
        "# accel leaderboard on the built-in models "
        f"({'quick, CI settings' if quick else 'full runs'})",
        "",
        __doc__.split("\n\n")[2].replace("\n", " "),
        "",
        table(COLUMNS, shown),
        "",
        "![FID ratio against time per image, relative to the original; points "
        f"numbered as the table's rows; the line is the Pareto front]({plot})",
        "",
        "Measured on:",
        "",
    ]
    lines += [f"- {line}" for line in sources] + [f"- Missing: {line}" for line in missing]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the quick results CI made")
    args = parser.parse_args(argv)
    out = HERE / ("leaderboard_quick.md" if args.quick else "report.md")
    rows, sources, missing = collect(args.quick, HERE)
    rows = ranked(rows)
    plot = out.with_suffix(".png")
    points = [
        {
            "label": str(row["rank"]),
            "x": 1 / row["speedup"],
            "y": row["fid_ratio"],
            "group": f"{row['model']}: {row['family']}",
        }
        for row in rows
        if row["speedup"]
    ]  # numbered as in the table: names would cover each other
    with atomic_file(plot) as partial:
        quality_speed_plot(
            points,
            partial,
            "wall time per image relative to the original (log scale)",
            "accel on digits and digits-dit: quality against speed "
            f"({'quick' if args.quick else 'full'} runs)",
        )
    text = markdown(rows, sources, missing, plot.name, args.quick)
    write_text(out, text)
    write_text(
        out.with_suffix(".json"),
        to_json(
            {
                "mode": "quick" if args.quick else "full",
                "rows": rows,
                "sources": sources,
                "missing": missing,
            }
        ),
    )
    print(text)


if __name__ == "__main__":
    main()
