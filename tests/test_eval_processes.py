"""`accel eval` as 2 CPU processes (torch.distributed.run with gloo, as `accelerate launch` runs it)
reports the quality one process reports: the processes share the batches, and the main one alone
writes and prints."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here runs a whole command or chain

WORKER = Path(__file__).parent / "eval_worker.py"
QUALITY = ("fid", "fid_at_floor_size", "calls_per_image", "macs_per_image")
NOTE = (
    "sampled by 2 processes; time per image is the sum of their "
    "batch times / n, latency per step the main process's own"
)


def run_eval(processes: int, argv: list[str]) -> dict:
    """The JSON report `accel ARGV` prints as ``processes`` processes. Every process runs one
    thread, as torch.distributed.run's do by default: the digits-CNN features (so FID) change in
    their last digits with the thread count, whatever the number of processes."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = [sys.executable, *(launcher if processes > 1 else []), str(WORKER), json.dumps(argv)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # one report: a second process printing would make this fail


@pytest.mark.slow
@pytest.mark.parametrize(
    "n,batch,sampling",
    [
        # 900 samples: enough for fid_at_floor_size; two deterministic samplers, so PSNR is computed
        ("900", "200", ["--steps", "1", "--baseline-steps", "2"]),
        # a stochastic sampler: each batch's step noise comes from its own generator; 30 samples all
        # fit samples.png
        ("30", "7", ["--sampler", "ddpm", "--steps", "5", "--baseline-steps", "2"]),
    ],
    ids=["ddim-900", "ddpm-30"],
)
def test_two_processes_report_the_quality_and_images_of_one(tmp_path, n, batch, sampling):
    """Five uneven batches: the main process draws three, the other two."""
    argv = [
        "eval",
        "--model",
        "digits",
        "--baseline",
        "digits",
        "--n",
        n,
        "--batch-size",
        batch,
        "--device",
        "cpu",
        "--json",
        *sampling,
    ]
    one = run_eval(1, [*argv, "--out", str(tmp_path / "one")])
    two = run_eval(2, [*argv, "--out", str(tmp_path / "two")])
    for side in ("original", "compressed"):
        assert {key: two[side][key] for key in QUALITY} == {key: one[side][key] for key in QUALITY}
    assert two["delta"]["psnr_db_vs_original"] == one["delta"]["psnr_db_vs_original"]
    assert sorted(two["notes"]) == sorted(one["notes"] + [NOTE])
    # The first 64 samples of each model, side by side, in order
    assert (tmp_path / "two" / "samples.png").read_bytes() == (
        tmp_path / "one" / "samples.png"
    ).read_bytes()
    assert json.loads((tmp_path / "two" / "report.json").read_text())["notes"] == two["notes"]
