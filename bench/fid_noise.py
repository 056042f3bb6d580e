"""How far the original's own FID moves with the noise draw: every ratio in accel's tables divides
by it.

    python -m bench.fid_noise              # digits, seeds 0-4, 2,000 samples, DDIM 50
                                           #   -> bench/results/fid_noise_digits_cpu.md and .json
    python -m bench.fid_noise --quick      # CI: 2 seeds, 64 samples, DDIM 6

The reference model is unconditional, so each draw also decides how many samples of each digit it
holds; the digits classifier's features separate the classes, so FID reads those proportions.
Each row gives the share of the most and least frequent digit (as the classifier reads them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import accel
from accel.metrics.digits_cnn import to_uint8
from accel.metrics.quality import fid_setup
from accel.report import table
from accel.sampling import sample
from bench.common import HERE, RESULTS, write_results

COLUMNS = {
    "seed": "seed",
    "fid": "FID",
    "fid_at_floor_size": "FID, first half",
    "rarest_digit_share": "rarest digit",
    "commonest_digit_share": "commonest digit",
}


def seed_row(model, fid, seed: int, n: int) -> dict:
    images = to_uint8(sample(model, n, seed, batch_size=500, progress=False).images)
    counts = np.bincount(fid.classify(images), minlength=10) / len(images)
    return {
        "seed": seed,
        **fid.scores(images),
        "rarest_digit_share": float(counts.min()),
        "commonest_digit_share": float(counts.max()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI settings")
    parser.add_argument("--out", type=Path, help="markdown report (a .json beside it)")
    args = parser.parse_args(argv)
    seeds, n, steps = ([0, 1], 64, 6) if args.quick else (list(range(5)), 2000, None)
    model = accel.load("digits", sampling={"steps": steps} if steps else None)
    fid = fid_setup(model.sample_shape)
    start = time.perf_counter()
    rows = [seed_row(model, fid, seed, n) for seed in seeds]
    fids = [row["fid"] for row in rows]
    results = {
        "samples": n,
        "steps": steps or 50,
        "rows": rows,
        "fid_min": min(fids),
        "fid_max": max(fids),
        "fid_floor": fid.real.floor,
    }
    body = (
        f"## The original's FID by noise seed ({n} samples, DDIM {steps or 50})\n\n"
        + table(COLUMNS, rows)
        + f"\n\nFID from {min(fids):.2f} to {max(fids):.2f} over {len(seeds)} draws; the real "
        f"images' own floor (two halves of the reference set) is {fid.real.floor:.2f}. A uniform "
        "share would be 0.1 per digit.\n"
    )
    out = args.out or (
        HERE / "fid_noise_quick.md" if args.quick else RESULTS / "fid_noise_digits_cpu.md"
    )
    command = f"python -m bench.fid_noise{' --quick' if args.quick else ''}"
    print(write_results(out, "FID over noise draws", command, start, body, results))


if __name__ == "__main__":
    main()
