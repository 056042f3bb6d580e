"""The report's pictures: sample grids side by side with a caption over each, and the
quality-against-speed plot with its Pareto front."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CAPTION_PX = 28  # the band above the grids that holds their captions (after scaling)


def sample_grid(
    images_by_model: list[np.ndarray],
    captions: list[str] | None = None,
    columns: int = 8,
    scale: int = 4,
    pad: int = 1,
):
    """A PIL image: each model's first ``columns**2`` samples as a grid (grey lines between cells),
    grids side by side with a white gap, each under its caption (the original, then each model) when
    ``captions`` are given."""
    from PIL import Image

    grids = [_grid(images, columns, pad) for images in images_by_model]
    gap = np.full((grids[0].shape[0], 4, grids[0].shape[2]), 255, dtype=np.uint8)
    joined = np.concatenate([part for grid in grids for part in (grid, gap)][:-1], axis=1)
    picture = Image.fromarray(joined.squeeze(-1) if joined.shape[-1] == 1 else joined)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    if not captions:
        return picture
    lefts = np.cumsum([0] + [(grid.shape[1] + gap.shape[1]) * scale for grid in grids[:-1]])
    return _captioned(picture, captions, list(lefts), [grid.shape[1] * scale for grid in grids])


def _grid(images: np.ndarray, columns: int, pad: int) -> np.ndarray:
    count = min(len(images), columns * columns)
    channels, height, width = images.shape[1:]
    rows = -(-count // columns)
    cell_h, cell_w = height + pad, width + pad
    grid = np.full((rows * cell_h - pad, columns * cell_w - pad, channels), 128, dtype=np.uint8)
    for i in range(count):
        r, c = divmod(i, columns)
        grid[r * cell_h : r * cell_h + height, c * cell_w : c * cell_w + width] = images[
            i
        ].transpose(1, 2, 0)
    return grid


def _captioned(picture, captions: list[str], lefts: list[int], widths: list[int]):
    """``picture`` under a white band with each caption over its grid (cut to the grid's width)."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new(
        picture.mode,
        (picture.width, picture.height + CAPTION_PX),
        255 if picture.mode == "L" else (255, 255, 255),
    )
    canvas.paste(picture, (0, CAPTION_PX))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    for caption, left, width in zip(captions, lefts, widths):
        text = caption
        while text and draw.textlength(text, font=font) > width:
            text = text[:-2] + "…" if len(text) > 2 else ""
        draw.text((int(left) + 2, 6), text, fill=0 if picture.mode == "L" else (0, 0, 0), font=font)
    return canvas


def pareto_front(points: list[dict]) -> list[dict]:
    """The points no other point beats on both axes (lower ``x``: faster; lower ``y``: better
    quality), by x."""
    front = [
        p
        for p in points
        if not any(
            o["x"] <= p["x"] and o["y"] <= p["y"] and (o["x"], o["y"]) != (p["x"], p["y"])
            for o in points
        )
    ]
    return sorted(front, key=lambda p: p["x"])


def quality_speed_plot(points: list[dict], path: Path, x_label: str, title: str) -> None:
    """A PNG at ``path``: FID ratio against ``x`` (both log scale), one labelled point per dict of
    ``points`` (``label``, ``x``, ``y``; an optional ``group`` colours points alike), and the Pareto
    front as a line."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.5), dpi=110)
    groups = list(dict.fromkeys(point.get("group", "") for point in points))
    for group in groups:
        members = [p for p in points if p.get("group", "") == group]
        axes.scatter(
            [p["x"] for p in members], [p["y"] for p in members], label=group or None, s=28
        )
    front = pareto_front(points)
    axes.step(
        [p["x"] for p in front],
        [p["y"] for p in front],
        where="post",
        color="black",
        linewidth=0.9,
        alpha=0.6,
        label="Pareto front (nothing both faster and better)",
    )
    # labels alternate above and below: neighbours often sit close
    for index, point in enumerate(points):
        axes.annotate(
            point["label"],
            (point["x"], point["y"]),
            textcoords="offset points",
            xytext=(4, 4 if index % 2 else -10),
            fontsize=7,
        )
    _log_axes(axes, points)
    axes.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel(x_label)
    axes.set_ylabel("FID ratio to the original (log scale; 1 = unchanged)")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    axes.grid(True, which="both", linewidth=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def _log_axes(axes, points: list[dict]) -> None:
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    # minor ticks labelled at 2x and 5x a power of ten only where the axis spans decades: all of
    # them crowd it
    sparse = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:e}"[0] in "25" else "")
    for axis, scale, key in (
        (axes.xaxis, axes.set_xscale, "x"),
        (axes.yaxis, axes.set_yscale, "y"),
    ):
        values = [point[key] for point in points]
        scale("log")
        axis.set_major_formatter(plain)
        # within a decade: all
        axis.set_minor_formatter(plain if max(values) < 10 * min(values) else sparse)
