"""The FID Inception network: structure of pytorch-fid's weights file, and the InceptionFeatures
wrapper.

The real weights file is not available here, so the structure is checked against an independent
layer table (written from torchvision's Inception3 plus pytorch-fid's FID patches) and a documented
parameter count.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from accel.core.errors import AccelError
from accel.metrics.inception import INCEPTION_WEIGHTS_NAME, InceptionFeatures, build_fid_inception

# torchvision documents 27,161,264 parameters for Inception3 (1000 classes, with the aux head). The
# FID network has no aux head (conv0 768*128 + bn 2*128, conv1 128*768*5*5 + bn 2*768, fc 768*1000 +
# 1000: 3,326,696) and 1008 classes (+8*2048 + 8): 27,161,264 - 3,326,696 + 16,392 = 23,850,960.
EXPECTED_PARAMETERS = 23_850_960


def _layer_table() -> dict[str, tuple[int, int, int, int]]:
    """Every BasicConv2d of the FID Inception: name -> (out, in, kh, kw)."""
    table = {}

    def conv(name, cin, cout, kh, kw=None):
        table[name] = (cout, cin, kh, kw or kh)

    for name, cin, cout, k in [
        ("Conv2d_1a_3x3", 3, 32, 3),
        ("Conv2d_2a_3x3", 32, 32, 3),
        ("Conv2d_2b_3x3", 32, 64, 3),
        ("Conv2d_3b_1x1", 64, 80, 1),
        ("Conv2d_4a_3x3", 80, 192, 3),
    ]:
        conv(name, cin, cout, k)
    for block, cin, pool in [("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)]:
        for name, i, o, kh in [
            ("branch1x1", cin, 64, 1),
            ("branch5x5_1", cin, 48, 1),
            ("branch5x5_2", 48, 64, 5),
            ("branch3x3dbl_1", cin, 64, 1),
            ("branch3x3dbl_2", 64, 96, 3),
            ("branch3x3dbl_3", 96, 96, 3),
            ("branch_pool", cin, pool, 1),
        ]:
            conv(f"{block}.{name}", i, o, kh)
    for name, i, o, kh in [
        ("branch3x3", 288, 384, 3),
        ("branch3x3dbl_1", 288, 64, 1),
        ("branch3x3dbl_2", 64, 96, 3),
        ("branch3x3dbl_3", 96, 96, 3),
    ]:
        conv(f"Mixed_6a.{name}", i, o, kh)
    for block, c7 in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)]:
        for name, i, o, kh, kw in [
            ("branch1x1", 768, 192, 1, 1),
            ("branch7x7_1", 768, c7, 1, 1),
            ("branch7x7_2", c7, c7, 1, 7),
            ("branch7x7_3", c7, 192, 7, 1),
            ("branch7x7dbl_1", 768, c7, 1, 1),
            ("branch7x7dbl_2", c7, c7, 7, 1),
            ("branch7x7dbl_3", c7, c7, 1, 7),
            ("branch7x7dbl_4", c7, c7, 7, 1),
            ("branch7x7dbl_5", c7, 192, 1, 7),
            ("branch_pool", 768, 192, 1, 1),
        ]:
            conv(f"{block}.{name}", i, o, kh, kw)
    for name, i, o, kh, kw in [
        ("branch3x3_1", 768, 192, 1, 1),
        ("branch3x3_2", 192, 320, 3, 3),
        ("branch7x7x3_1", 768, 192, 1, 1),
        ("branch7x7x3_2", 192, 192, 1, 7),
        ("branch7x7x3_3", 192, 192, 7, 1),
        ("branch7x7x3_4", 192, 192, 3, 3),
    ]:
        conv(f"Mixed_7a.{name}", i, o, kh, kw)
    for block, cin in [("Mixed_7b", 1280), ("Mixed_7c", 2048)]:
        for name, i, o, kh, kw in [
            ("branch1x1", cin, 320, 1, 1),
            ("branch3x3_1", cin, 384, 1, 1),
            ("branch3x3_2a", 384, 384, 1, 3),
            ("branch3x3_2b", 384, 384, 3, 1),
            ("branch3x3dbl_1", cin, 448, 1, 1),
            ("branch3x3dbl_2", 448, 384, 3, 3),
            ("branch3x3dbl_3a", 384, 384, 1, 3),
            ("branch3x3dbl_3b", 384, 384, 3, 1),
            ("branch_pool", cin, 192, 1, 1),
        ]:
            conv(f"{block}.{name}", i, o, kh, kw)
    return table


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_fid_inception()


@pytest.fixture(scope="module")
def weights_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / INCEPTION_WEIGHTS_NAME
    torch.save(model.state_dict(), path)
    return path


def test_state_dict_matches_fid_inception_structure(model):
    table = _layer_table()
    assert len(table) == 94
    expected = {"fc.weight": (1008, 2048), "fc.bias": (1008,)}
    for name, (cout, cin, kh, kw) in table.items():
        expected[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for part in ("weight", "bias", "running_mean", "running_var"):
            expected[f"{name}.bn.{part}"] = (cout,)
        expected[f"{name}.bn.num_batches_tracked"] = ()
    actual = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert actual == expected

    # A few spot checks written out by hand.
    assert actual["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert actual["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert actual["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert actual["Mixed_7a.branch3x3_2.conv.weight"] == (320, 192, 3, 3)
    assert actual["Mixed_7c.branch3x3dbl_3a.conv.weight"] == (384, 384, 1, 3)
    assert actual["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert actual["fc.weight"] == (1008, 2048)
    assert not any("AuxLogits" in key for key in actual)

    table_count = (
        sum(o * i * kh * kw + 2 * o for o, i, kh, kw in table.values()) + 1008 * 2048 + 1008
    )
    assert table_count == EXPECTED_PARAMETERS
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMETERS
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 94 and all(bn.eps == pytest.approx(1e-3) for bn in bns)
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_fid_pooling_variants(model):
    """Pool branches: average without counting padding (A, C, E_1 blocks); max pooling in
    Mixed_7c."""
    with torch.inference_mode():
        # Constant input: the 1x1 pool-branch conv output is spatially constant only if padding is
        # not averaged.
        for block, pool_channels in [
            (model.Mixed_5b, 32),
            (model.Mixed_6b, 192),
            (model.Mixed_7b, 192),
        ]:
            out = block(torch.ones(1, block.branch1x1.conv.in_channels, 6, 6))[:, -pool_channels:]
            torch.testing.assert_close(out, out[..., :1, :1].expand_as(out))
        # Two spikes: a 3x3 max at (3, 3) and (4, 4) is the same (10), an average is not (15/9 vs
        # 10/9).
        for block, pooled_by_max in [(model.Mixed_7b, False), (model.Mixed_7c, True)]:
            x = torch.zeros(1, block.branch1x1.conv.in_channels, 8, 8)
            x[..., 4, 4], x[..., 2, 2] = 10.0, 5.0
            out = block(x)[0, -192:]
            assert torch.allclose(out[:, 3, 3], out[:, 4, 4]) == pooled_by_max


@pytest.mark.slow
def test_features_round_trip(model, weights_file):
    features = InceptionFeatures(weights_file, batch_size=1)  # two batches
    assert features.name == "inception-pool3"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 3, 24, 40), dtype=np.uint8)
    images[1] = images[1, :1]  # a grey image stored as 3 channels
    out = features(images)
    assert out.shape == (2, 2048) and out.dtype == np.float64 and np.isfinite(out).all()
    assert out.std() > 0 and not np.allclose(out[0], out[1])

    with torch.inference_mode():
        direct = model(torch.from_numpy(images).float() / 255.0).double().numpy()
    np.testing.assert_allclose(out, direct, rtol=1e-4, atol=1e-5)

    grey = features(images[1:, :1])  # one channel is repeated to three
    np.testing.assert_allclose(grey[0], out[1], rtol=1e-4, atol=1e-5)
    assert features(images[:0]).shape == (0, 2048)


def test_missing_weights_file(tmp_path):
    with pytest.raises(AccelError, match="fid_weights") as info:
        InceptionFeatures(tmp_path / INCEPTION_WEIGHTS_NAME)
    assert INCEPTION_WEIGHTS_NAME in str(info.value) and "\n" not in str(info.value)


def test_wrong_weights_files(model, tmp_path):
    wrong_keys = tmp_path / "wrong_keys.pth"
    torch.save(torch.nn.Linear(4, 2).state_dict(), wrong_keys)
    with pytest.raises(AccelError, match="not the FID Inception weights"):
        InceptionFeatures(wrong_keys)

    state = dict(model.state_dict())
    state["fc.weight"], state["fc.bias"] = (
        torch.zeros(1000, 2048),
        torch.zeros(1000),
    )  # torchvision's classes
    wrong_shape = tmp_path / "wrong_shape.pth"
    torch.save(state, wrong_shape)
    with pytest.raises(AccelError, match="fc.weight"):
        InceptionFeatures(wrong_shape)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(AccelError, match="not the FID Inception weights"):
        InceptionFeatures(garbage)


def test_old_file_without_num_batches_tracked_loads(model, tmp_path):
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / INCEPTION_WEIGHTS_NAME
    torch.save(state, path)
    features = InceptionFeatures(path)
    torch.testing.assert_close(features.network.fc.weight, model.fc.weight)
