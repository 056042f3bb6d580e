"""The leaderboard: every method and chain on the built-in model in one table and one plot, each row against the
original (fp32, PyTorch, DDIM 50) measured in the same benchmark run as the row.

    python -m bench.leaderboard          # from the full runs in bench/results/ -> bench/report.md, .json, .png
    python -m bench.leaderboard --quick  # from the quick runs CI just made (bench/*_quick.json)
                                         #   -> bench/leaderboard_quick.md, .json, .png

It measures nothing itself: each benchmark (bench.run, bench.prune, bench.distill, bench.cache, bench.compress)
measured its rows against its own run of the original, and this reads their JSON. Speedup is wall time per image
where the benchmark sampled both models; for the pruning rows it is one denoiser call at the sampling batch
(same sampler, so the same ratio per image); fake-quantized PyTorch rows have none (their integer speed is the
ONNX Runtime rows').
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from accel.core.files import atomic_file, write_text
from accel.report import quality_speed_plot, to_json

HERE = Path(__file__).parent
RESULTS = HERE / "results"
COLUMNS = {"rank": "#", "method": "method", "family": "family", "runtime": "runs in", "calls_per_image": "calls/image",
           "fid": "FID", "fid_ratio": "FID ratio", "speedup": "speedup (time/image)", "size_ratio": "size ratio",
           "samples": "samples", "source": "from"}


def _row(method, family, source, samples, fid, original_fid, speedup=None, size_ratio=None, calls=50,
         runtime="PyTorch") -> dict:
    return {"method": method, "family": family, "runtime": runtime, "calls_per_image": calls, "fid": fid,
            "fid_ratio": fid / original_fid, "speedup": speedup, "size_ratio": size_ratio, "samples": samples,
            "source": source}


def quantization_rows(data: dict, source: str) -> list[dict]:
    """bench.run: the original, fewer-step samplers, W4A8/W8A8 (fake-quantized) and the ONNX Runtime rows."""
    rows = {row["variant"]: row for row in data["rows"]}
    reference = rows["fp32 (PyTorch)"]
    fid0, ms0, size0, n = reference["fid"], reference["ms_per_image"], reference["size_bytes"], data["settings"]["n"]
    out = [_row("original, DDIM 50", "original", source, n, fid0, fid0, 1.0, 1.0)]
    for variant, row in rows.items():
        if variant.startswith("fp32 D"):  # the same model with another sampler or fewer steps
            out.append(_row(variant.removeprefix("fp32 "), "sampler", source, n, row["fid"], fid0, row["speedup"],
                            1.0, row["calls_per_image"]))
        elif variant.startswith("+ reconstruction") or variant.startswith("W8A8 (same"):
            name = "W4A8 (Q-Diffusion recipe)" if variant.startswith("+") else "W8A8 (Q-Diffusion recipe)"
            out.append(_row(name + ", fake-quantized", "quantization", source, data["settings"]["ablation_n"],
                            row["fid"], fid0, None, row["size_bytes"] / size0))
        elif "ONNX" in variant:
            out.append(_row(variant.split(",")[0], "export", source, n, row["fid"], fid0, ms0 / row["ms_per_image"],
                            row["size_bytes"] / size0, row["calls_per_image"], "ONNX Runtime (CPU)"))
    return out


def pruning_rows(data: dict, source: str) -> list[dict]:
    ablation = data["ablation"]
    return [_row(f"prune {row['name']}, fine-tuned {ablation['finetune']['steps']} steps", "pruning", source,
                 ablation["samples"], row["fid"], ablation["original_fid"], row["step_speedup"], row["params_ratio"])
            for row in ablation["rows"]]


def distillation_rows(data: dict, source: str) -> list[dict]:
    teacher = data["teacher_ddim50"]
    kept = ("progressive (v student)", "consistency (v student)", "teacher, plain DDIM")
    return [_row(f"{row['model']}, {row['steps']} steps", "sampler" if row["model"].startswith("teacher")
                 else "distillation", source, data["settings"]["n"], row["fid"], teacher["fid"],
                 teacher["ms_per_image"] / row["ms_per_image"], 1.0, row["calls_per_image"])
            for row in data["rows"] if row["model"] in kept and (row["steps"] in (4, 8) or "student" in row["model"])]


def caching_rows(data: dict, source: str) -> list[dict]:
    out = []
    for row in data["rows"]:
        where = "uniform" if row["schedule"] == "uniform" else f"quadratic at {row['center']:g}"
        cached = row["cached"]
        out.append(_row(f"DeepCache every {row['interval']}, branch {row['branch']}, {where}", "caching", source,
                        data["settings"]["n"], cached["fid"], row["original"]["fid"], cached["speedup"], 1.0))
    return out


def recipe_rows(data: dict, source: str) -> list[dict]:
    out = []
    for recipe in data["recipes"]:
        original, final = recipe["rows"][0], recipe["rows"][-1]
        out.append(_row(f"recipe {recipe['recipe']} ({len(recipe['rows']) - 1} stages, "
                        f"{recipe['total_s'] / 60:.0f} min)", "recipe", source, recipe["n"], final["fid"],
                        original["fid"], final["speedup"], final["size_ratio"], final["calls_per_image"],
                        final["runtime"]))
    return out


# benchmark -> (full result, quick result, reader)
SOURCES = {"bench.run": ("results/quant_digits_cpu.json", "quant_quick.json", quantization_rows),
           "bench.prune": ("results/prune_digits_cpu.json", "prune_quick.json", pruning_rows),
           "bench.distill": ("results/distill_digits_cpu.json", "distill_quick.json", distillation_rows),
           "bench.cache": ("results/cache_digits_cpu.json", "cache_quick.json", caching_rows),
           "bench.compress": ("results/compress_digits_cpu.json", "compress_quick.json", recipe_rows)}


def collect(quick: bool) -> tuple[list[dict], list[str]]:
    """Every benchmark's rows, and a line for each benchmark whose results are missing."""
    rows, missing = [], []
    for bench, (full, quick_file, reader) in SOURCES.items():
        path = HERE / (quick_file if quick else full)
        if not path.is_file():
            missing.append(f"{bench}: no {path.relative_to(HERE.parent)} (run `python -m {bench}"
                           f"{' --quick' if quick else ''}`)")
            continue
        rows += reader(json.loads(path.read_text()), str(path.relative_to(HERE)))
    return rows, missing


def markdown(rows: list[dict], missing: list[str], plot: str, quick: bool) -> str:
    lines = [f"# accel leaderboard on digits ({'quick, CI settings' if quick else 'full runs'})", "",
             __doc__.split("\n\n")[2].replace("\n", " "), "",
             "| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(key, row[key]) for key in COLUMNS) + " |")
    lines += ["", f"![FID ratio against time per image, relative to the original; points numbered as the table's "
              f"rows]({plot})", ""]
    lines += [f"- Missing: {line}" for line in missing]
    return "\n".join(lines) + "\n"


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "speedup":
        return f"{value:.2f}x"
    if isinstance(value, float):
        return f"{value:.3g}"
    if key == "source":
        return f"[{Path(value).name}]({value})"
    return str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick results CI made")
    args = parser.parse_args(argv)
    out = HERE / ("leaderboard_quick.md" if args.quick else "report.md")
    rows, missing = collect(args.quick)
    rows.sort(key=lambda r: (r["family"] != "original", -(r["speedup"] or 0)))
    for rank, row in enumerate(rows):
        row["rank"] = rank
    plot = out.with_suffix(".png")
    points = [{"label": str(row["rank"]), "x": 1 / row["speedup"], "y": row["fid_ratio"], "group": row["family"]}
              for row in rows if row["speedup"]]  # numbered as in the table: names would cover each other
    with atomic_file(plot) as partial:
        quality_speed_plot(points, partial, "wall time per image relative to the original (log scale)",
                           f"accel on digits: quality against speed ({'quick' if args.quick else 'full'} runs)")
    text = markdown(rows, missing, plot.name, args.quick)
    write_text(out, text)
    write_text(out.with_suffix(".json"), to_json({"mode": "quick" if args.quick else "full", "rows": rows,
                                                  "missing": missing}))
    print(text)


if __name__ == "__main__":
    main()
