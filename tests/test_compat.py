"""Artifacts written by accel 0.1 (tests/data/v0.1, before the core) still load and compute what
they did."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import accel
from accel.core import registry

OLD = Path(__file__).parent / "data" / "v0.1"


@pytest.mark.parametrize(
    "name,key", [("tiny-w4a8", "w4a8_eps"), ("tiny-optimized", "optimized_eps")]
)
def test_version_0_1_artifacts_load_and_give_the_same_outputs(name, key):
    expected = load_file(str(OLD / "expected.safetensors"))
    model = accel.load(OLD / name)
    with torch.no_grad():
        output = model(expected["x"], expected["t"])
    # the expected outputs were computed on an Intel Xeon; another CPU's kernels sum in another
    # order (up to 8e-7 apart on an AMD EPYC), so "the same" is to float rounding, not bit for bit
    torch.testing.assert_close(output, expected[key], rtol=1e-5, atol=1e-5)
    assert model.sampling == accel.SamplingSpec()  # every command ran DDIM 50 then
    record = model.transforms[0]  # read as version 1, kept in the current version of its config
    assert record["config"]["version"] == registry.get(record["name"]).config.VERSION


def test_a_version_0_1_artifact_saved_again_is_written_in_the_current_format(tmp_path):
    model = accel.load(OLD / "tiny-w4a8")
    accel.save(model, tmp_path / "again")
    again = accel.load(tmp_path / "again")
    x, t = load_file(str(OLD / "expected.safetensors"))["x"], torch.tensor([500, 20])
    with torch.no_grad():
        assert torch.equal(again(x, t), model(x, t))
    assert "calib_policy" not in again.transforms[0]["config"]
