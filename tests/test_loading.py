import json

import pytest
import torch

import accel
from accel.core.errors import AccelError


def test_load_diffusers_folder_reproduces_model(tiny_unet, tiny_unet_dir):
    denoiser = accel.load(tiny_unet_dir)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(
        denoiser(x, 20), tiny_unet(x, torch.tensor([20, 20])).sample, rtol=0, atol=0
    )
    assert denoiser.scheduler_config["num_train_timesteps"] == 100
    assert (
        denoiser.weights_bytes
        == (tiny_unet_dir / "diffusion_pytorch_model.safetensors").stat().st_size
    )
    assert not denoiser.training


def test_load_pipeline_folder_finds_unet_and_scheduler_subfolders(tmp_path, tiny_unet):
    from diffusers import DDIMScheduler

    pipeline = tmp_path / "pipe"
    tiny_unet.save_pretrained(pipeline / "unet")
    DDIMScheduler(num_train_timesteps=321).save_config(pipeline / "scheduler")
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    denoiser = accel.load(pipeline)
    assert denoiser.kind == "unet" and denoiser.scheduler_config["num_train_timesteps"] == 321
    assert denoiser.notes == []


def test_missing_scheduler_config_falls_back_with_a_note(tmp_path, tiny_unet):
    tiny_unet.save_pretrained(tmp_path / "m")
    denoiser = accel.load(tmp_path / "m")
    assert denoiser.scheduler_config["beta_schedule"] == "linear"
    assert any("scheduler_config.json" in note for note in denoiser.notes)


def test_builtin_digits_model_loads():
    denoiser = accel.load("digits")
    assert denoiser.kind == "unet" and denoiser.sample_shape == (1, 16, 16)
    assert 1_000_000 <= sum(p.numel() for p in denoiser.parameters()) <= 4_000_000


def test_artifact_round_trip_is_exact(tmp_path, tiny_unet_dir):
    original = accel.load(tiny_unet_dir)
    accel.save(original, tmp_path / "artifact")
    files = sorted(p.name for p in (tmp_path / "artifact").iterdir())
    assert files == ["accel.json", "config.json", "model.safetensors", "scheduler_config.json"]
    restored = accel.load(tmp_path / "artifact")
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(restored(x, 3), original(x, 3), rtol=0, atol=0)
    assert restored.scheduler_config == original.scheduler_config
    assert json.loads((tmp_path / "artifact" / "accel.json").read_text())["transforms"] == []


def test_save_refuses_non_empty_out_and_leaves_no_temporary(tmp_path, tiny_unet_dir):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(AccelError, match="not empty"):
        accel.save(accel.load(tiny_unet_dir), out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken", "tiny-unet"]


def test_artifact_with_unknown_transform_is_refused(tmp_path, tiny_unet_dir):
    accel.save(accel.load(tiny_unet_dir), tmp_path / "a")
    record = json.loads((tmp_path / "a" / "accel.json").read_text())
    record["transforms"] = [{"name": "warp-drive", "config": {}}]
    (tmp_path / "a" / "accel.json").write_text(json.dumps(record))
    with pytest.raises(AccelError, match="warp-drive"):
        accel.load(tmp_path / "a")


@pytest.mark.parametrize("name", ["no/such/path/at/all", "definitely-not-a-model"])
def test_missing_path_or_unknown_name(name):
    with pytest.raises(AccelError, match="no model at"):
        accel.load(name)


def test_hub_id_not_in_cache_says_no_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AccelError, match="never downloads"):
        accel.load("google/ddpm-cifar10-32")


def test_folder_without_config_is_not_a_model(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(AccelError, match="not a diffusers model folder"):
        accel.load(tmp_path)


def test_unsupported_class_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(AccelError, match="AutoencoderKL"):
        accel.load(tmp_path)


def test_corrupt_safetensors_is_reported(tiny_unet_dir):
    weights = tiny_unet_dir / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(AccelError, match="not a readable safetensors file"):
        accel.load(tiny_unet_dir)


def test_folder_with_config_but_no_weights(tmp_path, tiny_unet):
    tiny_unet.save_config(tmp_path)
    with pytest.raises(AccelError, match="cannot load weights"):
        accel.load(tmp_path)


def test_a_model_larger_than_the_free_memory_is_refused_before_loading_with_the_estimate(
    capsys, tmp_path, monkeypatch
):
    import accel.core.memory
    from conftest import refused

    monkeypatch.setattr(accel.core.memory, "available_bytes", lambda: 1_000)
    line = refused(capsys, tmp_path, "info", "--model", "digits")
    assert "needs about 0.0 GB of memory and 0.0 GB is available" in line
    monkeypatch.setattr(accel.core.memory, "available_bytes", lambda: None)  # not Linux: no check
    assert accel.load("digits").kind == "unet"
