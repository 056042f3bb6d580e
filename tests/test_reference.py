import json

import pytest
import torch
from safetensors.torch import load_file

import accel
from accel.metrics.digits_cnn import WEIGHTS_PATH, DigitsCNN, to_uint8, uint8_to_unit_range
from accel.models import reference
from accel.models.reference import REFERENCE_DIR, REFERENCE_TRAINING, train_reference
from accel.train import NoisePrediction, TrainConfig


@pytest.mark.slow
def test_reference_samples_are_confident_digits_of_all_ten_classes():
    """200 samples at 25 DDIM steps, judged by the held-out-validated classifier."""
    images = accel.sample(
        accel.load("digits"),
        200,
        seed=0,
        spec=accel.SamplingSpec(steps=25),
        batch_size=200,
        progress=False,
    ).images
    classifier = DigitsCNN().eval()
    classifier.load_state_dict(load_file(WEIGHTS_PATH))
    with torch.inference_mode():
        probabilities = classifier(uint8_to_unit_range(to_uint8(images))).softmax(1)
    confident = probabilities.max(1).values > 0.9
    assert confident.float().mean() > 0.85
    counts = torch.bincount(probabilities.argmax(1)[confident], minlength=10)
    assert counts.min() >= 5, counts.tolist()  # every class appears, none dominates the rest away


def test_committed_training_record_matches_weights_and_config():
    record = json.loads((REFERENCE_DIR / "training.json").read_text())
    assert TrainConfig.from_dict(record["config"]) == REFERENCE_TRAINING
    assert record["params"] == sum(p.numel() for p in accel.load("digits").parameters())
    assert record["loss_per_tenth_of_training"][-1] < record["loss_per_tenth_of_training"][0] / 3


TINY = TrainConfig(steps=4, batch_size=8, warmup_steps=1, checkpoint_every=2)


@pytest.mark.slow
def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    train_reference(tmp_path / "straight", TINY)
    calls = {"n": 0}
    real_loss = NoisePrediction.loss

    def dies_on_third_step(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_loss(self, *args)

    monkeypatch.setattr(NoisePrediction, "loss", dies_on_third_step)
    with pytest.raises(KeyboardInterrupt):
        train_reference(tmp_path / "resumed", TINY)
    assert not (tmp_path / "resumed").exists()
    assert sorted(p.name for p in (tmp_path / "resumed.partial" / "checkpoint").iterdir()) == [
        "state.json",
        "tensors.safetensors",
    ]  # nothing pickled: loading it runs no code
    monkeypatch.setattr(NoisePrediction, "loss", real_loss)
    train_reference(tmp_path / "resumed", TINY)
    straight = load_file(tmp_path / "straight" / "diffusion_pytorch_model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "diffusion_pytorch_model.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert not (tmp_path / "resumed.partial").exists()
    assert accel.load(tmp_path / "resumed").sample_shape == (1, 16, 16)


def test_training_actually_changes_the_weights(tmp_path):
    train_reference(tmp_path / "m", TINY)
    torch.manual_seed(TINY.seed)
    initial = reference.build_reference_unet().state_dict()
    trained = load_file(tmp_path / "m" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(initial[k], trained[k]) for k in trained)
