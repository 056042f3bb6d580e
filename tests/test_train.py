import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from accel.core.errors import AccelError
from accel.train import NoisePrediction, TrainConfig, train
from conftest import make_tiny_unet

WORKER = Path(__file__).parent / "ddp_worker.py"


def run_two_processes(*args: str) -> None:
    """tests/ddp_worker.py as 2 CPU processes under torch.distributed.run; ``--standalone`` lets it
    pick a free port itself (a port chosen here could be taken before it binds). On failure, the
    workers' own errors."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if "Error" in line or "error" in line]
    assert done.returncode == 0, "\n".join(errors[:20]) or done.stderr[-2000:]


@pytest.mark.slow
def test_two_processes_end_with_identical_weights_after_seeing_different_data(tmp_path):
    """The loop under torch.distributed.run with 2 CPU processes (gloo), as `accelerate launch` runs
    it."""
    run_two_processes(str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    weights = [load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1)]
    assert ranks[0]["processes"] == ranks[1]["processes"] == 2
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # each step, each its own batch
    assert all(a != b for a, b in zip(ranks[0]["seen"], ranks[1]["seen"]))
    # the logged loss is the mean over both processes
    assert ranks[0]["losses"] == ranks[1]["losses"]
    initial = make_tiny_unet().state_dict()
    assert any(not torch.equal(initial[k], weights[0][k]) for k in initial)


def _task():
    images = torch.rand(16, 3, 8, 8) * 2 - 1
    return NoisePrediction(images, dict(DDPMScheduler(num_train_timesteps=100).config))


def _forward_of(module):
    return lambda x, t, cond: module(x, t).sample


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    config = TrainConfig(steps=3, batch_size=2, warmup_steps=0, checkpoint_every=1)
    with pytest.raises(KeyboardInterrupt):

        class Dies(NoisePrediction):
            calls = 0

            def loss(self, *args):
                Dies.calls += 1
                if Dies.calls == 3:
                    raise KeyboardInterrupt
                return super().loss(*args)

        task = _task()
        task.__class__ = Dies
        train(
            make_tiny_unet(),
            task,
            config,
            tmp_path,
            run={"lr": 1},
            forward_of=_forward_of,
            progress=False,
        )
    with pytest.raises(AccelError, match=r"belongs to another run \(lr differ\)"):
        train(
            make_tiny_unet(),
            _task(),
            config,
            tmp_path,
            run={"lr": 2},
            forward_of=_forward_of,
            progress=False,
        )
    result = train(
        make_tiny_unet(),
        _task(),
        config,
        tmp_path,
        run={"lr": 1},
        forward_of=_forward_of,
        progress=False,
    )
    assert result.resumed_at == 2 and len(result.losses) == 3


def test_warm_up_then_cosine_decay_to_the_floor():
    config = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert config.learning_rate(0) == pytest.approx(0.1) and config.learning_rate(
        9
    ) == pytest.approx(1.0)
    assert config.learning_rate(10) == pytest.approx(1.0)
    assert config.learning_rate(55) == pytest.approx(0.55)
    assert config.learning_rate(100) == pytest.approx(0.1)
