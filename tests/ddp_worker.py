"""One process of the two-process tests (tests/test_train.py and tests/test_distill.py run it under
torch.distributed.run): trains a tiny UNet with accel's loop, or distills one progressively in two
stages, and writes its final weights (and, for the loop, the image indices it drew)."""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from accel.train import NoisePrediction, TrainConfig, train  # noqa: E402
from conftest import make_tiny_unet  # noqa: E402


class RecordingTask(NoisePrediction):
    """Noise prediction that remembers which images each step drew."""

    seen: list[list[int]] = []

    def loss(self, forward, batch_size, generator, device):
        index, noisy, t, noise, cond = self.noisy_batch(batch_size, generator, device)
        self.seen.append(index.tolist())
        return torch.nn.functional.mse_loss(forward(noisy, t, cond), noise)


def main(out: Path) -> None:
    from diffusers import DDPMScheduler

    images = torch.rand(64, 3, 8, 8) * 2 - 1
    task = RecordingTask(images, dict(DDPMScheduler(num_train_timesteps=100).config))
    config = TrainConfig(
        steps=3, batch_size=4, lr=1e-2, warmup_steps=0, ema_decay=0.0, checkpoint_every=10
    )
    result = train(
        make_tiny_unet(),
        task,
        config,
        out / "work",
        run={"test": "ddp"},
        forward_of=lambda module: lambda x, t, cond: module(x, t).sample,
        progress=False,
    )
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    save_file(
        {k: v.contiguous() for k, v in result.network.state_dict().items()},
        str(out / f"rank{rank}.safetensors"),
    )
    (out / f"rank{rank}.json").write_text(
        json.dumps({"seen": task.seen, "processes": result.processes, "losses": result.losses})
    )


def distill(out: Path) -> None:
    import accel

    model = accel.Denoiser(
        make_tiny_unet(), {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}
    )
    images = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    config = TrainConfig(steps=2, batch_size=4, warmup_steps=1, checkpoint_every=1)
    accel.distill(
        model,
        accel.DistillConfig(steps=2, teacher_steps=8),
        images,
        config,
        work_dir=out / "work",
        progress=False,
    )
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    save_file(
        {k: v.contiguous() for k, v in model.module.state_dict().items()},
        str(out / f"rank{rank}.safetensors"),
    )
    (out / f"rank{rank}.json").write_text(json.dumps(model.transforms[-1]["stages"]))


if __name__ == "__main__":
    (distill if sys.argv[2:] == ["distill"] else main)(Path(sys.argv[1]))
