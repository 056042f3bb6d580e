import pytest
import torch

from accel.core.errors import AccelError
from accel.quant.quantizer import Quantizer, grid, round_ste


def test_grids():
    assert grid(8, True) == (-128, 127) and grid(4, True) == (-8, 7) and grid(4, False) == (0, 15)


def test_symmetric_minmax_codes_and_scale_exact():
    q = Quantizer(4, symmetric=True, range_method="minmax")
    x = torch.tensor([-0.7, -0.35, 0.0, 0.1, 0.35])
    q.fit(x)
    assert q.scale.item() == pytest.approx(0.1)  # max |x| / 7
    assert q.zero_point.item() == 0
    assert q.codes(x).tolist() == [-7, -4, 0, 1, 4]  # -3.5 rounds to even: -4; 3.5 -> 4
    torch.testing.assert_close(q(x), q.codes(x).float() * q.scale, rtol=0, atol=0)


def test_asymmetric_grid_contains_zero_and_uses_zero_point():
    q = Quantizer(8, symmetric=False, range_method="minmax")
    x = torch.linspace(0.5, 3.0, 100)  # all positive: range must be stretched to include 0
    q.fit(x)
    assert q.zero_point.item() == 0 and q.scale.item() == pytest.approx(3.0 / 255)
    shifted = torch.linspace(-1.0, 3.0, 100)
    q.fit(shifted)
    assert q.zero_point.item() == round(1.0 / (4.0 / 255))
    assert q(torch.zeros(1)).item() == 0.0  # zero is exactly representable
    assert (q(shifted) - shifted).abs().max() <= q.scale.item() / 2 + 1e-6


def test_per_channel_scales_follow_each_output_channel():
    weight = torch.randn(6, 3, 3, 3) * torch.tensor([0.01, 0.1, 1, 10, 100, 1000]).view(-1, 1, 1, 1)
    q = Quantizer(8, per_channel=True, range_method="minmax")
    q.fit(weight)
    assert q.scale.shape == (6,)
    torch.testing.assert_close(q.scale, weight.abs().amax(dim=(1, 2, 3)) / 127)
    relative = (q(weight) - weight).abs().amax(dim=(1, 2, 3)) / weight.abs().amax(dim=(1, 2, 3))
    assert relative.max() <= 0.5 / 127 + 1e-6


def test_groups_along_the_input_dimension():
    weight = torch.randn(4, 64)
    weight[:, :32] *= 100  # first half of every row much larger
    grouped = Quantizer(4, per_channel=True, group_size=32, range_method="minmax")
    grouped.fit(weight)
    assert grouped.scale.shape == (8,)
    whole = Quantizer(4, per_channel=True, range_method="minmax")
    whole.fit(weight)
    small_half = (slice(None), slice(32, None))
    assert (grouped(weight) - weight)[small_half].abs().mean() < (whole(weight) - weight)[
        small_half
    ].abs().mean() / 5


def test_mse_search_clips_outliers_and_beats_minmax():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(10_000), torch.tensor([40.0])])
    errors = {}
    for method in ("minmax", "mse", "percentile"):
        q = Quantizer(4, range_method=method)
        q.fit(x)
        errors[method] = (q(x) - x).pow(2).mean().item()
    assert errors["mse"] < errors["minmax"] / 5
    assert errors["percentile"] < errors["minmax"]


def test_quantizing_changes_values_and_is_idempotent():
    torch.manual_seed(1)
    x = torch.randn(1000)
    q = Quantizer(4)
    q.fit(x)
    once = q(x)
    assert (once - x).abs().mean() > 0.01
    torch.testing.assert_close(q(once), once, rtol=0, atol=0)


def test_straight_through_gradients():
    x = torch.tensor([0.2, 1.7], requires_grad=True)
    round_ste(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]
    q = Quantizer(8)
    q.fit(torch.tensor([-1.0, 1.0]))
    q.scale.requires_grad_(True)
    (q(torch.tensor([0.3, -0.6])) ** 2).sum().backward()
    # learned step size (LSQ) gets a gradient
    assert q.scale.grad is not None and q.scale.grad.abs() > 0


def test_observing_activations_then_fitting():
    q = Quantizer(8, range_method="minmax")
    q.start_observing()
    x1, x2 = torch.randn(50_000) * 2, torch.randn(100) - 9.0
    assert torch.equal(q(x1), x1)  # pass-through while observing
    q(x2)
    q.finish_observing()
    assert q.scale.item() == pytest.approx(max(x1.abs().max(), x2.abs().max()).item() / 127)


@pytest.mark.parametrize("bits", [1, 17])
def test_bits_out_of_range(bits):
    with pytest.raises(AccelError, match="bits must be in 2..16"):
        Quantizer(bits)


def test_activation_ranges_do_not_depend_on_global_random_state():
    x = torch.randn(300_000)
    scales = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        q = Quantizer(8)
        q.start_observing()
        q(x)
        q.finish_observing()
        scales.append(q.scale.item())
    assert scales[0] == scales[1]
