"""What ``accel compress`` leaves in OUT: the final model, report.json / report.md with the stage
table, samples.png (the original, then each stage, captioned) and the quality-vs-speed plot."""

from __future__ import annotations

import shutil
from pathlib import Path

from accel.compress.chain import StageRun
from accel.compress.recipe import Recipe
from accel.compress.stage_table import stage_rows, stages_markdown
from accel.core.files import atomic_file, write_text
from accel.evaluate import Evaluation
from accel.report import Report, quality_speed_plot, sample_grid, to_json

ARTIFACT_FILES = ("config.json", "scheduler_config.json", "accel.json", "model.safetensors")
PLOT = "quality_vs_speed.png"


def chain_report(
    evaluations: list[Evaluation],
    references: list[Evaluation],
    runs: list[StageRun],
    recipe: Recipe,
) -> Report:
    """The final stage's report against the original, with the stage table (and the original in the
    final model's runtime, from ``references``), the plot and the samples picture."""
    report = evaluations[-1].report
    rows = stage_rows([e.report for e in evaluations], runs, [e.report for e in references])
    report.add_section("recipe", recipe.to_dict())
    report.add_section("stages", rows, stages_markdown(rows, PLOT))
    return report


def _place_final(output: Path, out: Path) -> Path:
    """The last stage's model copied to OUT itself: an artifact's files, or the exported file(s)."""
    if output.is_dir():
        for name in ARTIFACT_FILES:
            _copy(output / name, out / name)
        return out
    # model.onnx and a cached model's model.cached.onnx
    for companion in output.parent.glob(f"{output.stem}.*"):
        if companion.is_file():
            _copy(companion, out / companion.name)
    return out / output.name


def _copy(source: Path, target: Path) -> None:
    with atomic_file(target) as partial:
        shutil.copyfile(source, partial)


def write_outputs(
    out: Path, report: Report, evaluations: list[Evaluation], runs: list[StageRun]
) -> Path:
    """The final model, the report, the samples picture and the plot into ``out``; returns the final
    model's place there."""
    final = _place_final(runs[-1].output, out)
    images = [evaluations[0].images[0]] + [e.images[1] for e in evaluations]
    captions = ["original"] + [run.spec.folder for run in runs]
    write_text(out / "report.json", to_json(report.to_dict()))
    write_text(out / "report.md", report.to_markdown())
    with atomic_file(out / "samples.png") as partial:
        sample_grid(images, captions).save(partial)
    points = [
        {"label": row["stage"], "x": row["ms_per_image"], "y": row["fid_ratio"] or 1.0}
        for row in report.sections["stages"]
    ]
    with atomic_file(out / PLOT) as partial:
        quality_speed_plot(
            points,
            partial,
            "wall time per image (ms, log scale)",
            f"accel compress --recipe {report.config['name']}: {report.model}",
        )
    return final
