import pytest
import torch
import torch.nn as nn

import accel
from conftest import make_tiny_dit, make_tiny_text_unet, make_tiny_unet


def test_unet2d_adapter_matches_direct_call(tiny_unet):
    denoiser = accel.load(tiny_unet)
    x = torch.randn(3, 3, 8, 8)
    t = torch.tensor([1, 50, 999])
    assert (
        denoiser.kind == "unet"
        and denoiser.sample_shape == (3, 8, 8)
        and denoiser.cond_kind is None
    )
    torch.testing.assert_close(denoiser(x, t), tiny_unet(x, t).sample, rtol=0, atol=0)


def test_scalar_timestep_broadcasts_to_batch(tiny_unet):
    denoiser = accel.load(tiny_unet)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(denoiser(x, 7), denoiser(x, torch.tensor([7, 7])), rtol=0, atol=0)


def test_class_conditional_unet_uses_labels():
    denoiser = accel.load(make_tiny_unet(num_class_embeds=10))
    x = torch.randn(2, 3, 8, 8)
    assert denoiser.cond_kind == "class"
    assert not torch.allclose(
        denoiser(x, 5, torch.tensor([0, 0])), denoiser(x, 5, torch.tensor([3, 3]))
    )


def test_text_unet_passes_encoder_hidden_states():
    model = make_tiny_text_unet()
    denoiser = accel.load(model)
    x, cond = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 16)
    assert denoiser.cond_kind == "text"
    torch.testing.assert_close(
        denoiser(x, 10, cond), model(x, torch.tensor([10, 10]), encoder_hidden_states=cond).sample
    )
    with pytest.raises(accel.AccelError, match="needs cond"):
        denoiser(x, 10)
    assert denoiser.default_cond(3, torch.Generator()).shape == (3, 77, 16)


def test_dit_returns_eps_half_of_learned_sigma_output():
    model = make_tiny_dit()
    denoiser = accel.load(model)
    x, labels = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    full = model(x, timestep=torch.tensor([10, 10]), class_labels=labels).sample
    assert full.shape[1] == 8
    torch.testing.assert_close(denoiser(x, 10, labels), full[:, :4])
    assert denoiser.cond_kind == "class"


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x, t):
        return self.conv(x) * (1 + t.float().view(-1, 1, 1, 1) / 1000)


def test_plain_module_needs_and_uses_sample_shape():
    with pytest.raises(accel.AccelError, match="sample_shape"):
        accel.Denoiser(Plain(), {})
    denoiser = accel.Denoiser(Plain(), {"num_train_timesteps": 1000}, sample_shape=(2, 4, 4))
    x = torch.randn(2, 2, 4, 4)
    torch.testing.assert_close(denoiser(x, 0), denoiser.module.conv(x))
