"""Fidelity to the original (accel.metrics.fidelity): zero error for an untouched copy, an error
that grows as the weights get coarser, measured on the original's own trajectory."""

import copy
import math

import pytest
import torch

import accel
from accel.metrics.fidelity import (
    error_of,
    output_fidelity,
    sample_fidelity,
    trajectory_calls,
)
from conftest import make_tiny_unet


def _quantized(model, bits: int):
    copied = copy.deepcopy(model)
    weight_only = accel.QuantConfig(w_bits=bits, a_bits=None, rounding="nearest")
    accel.quantize_(copied, weight_only, None, progress=False)
    return copied


def test_error_of_gives_the_sqnr_of_a_known_noise():
    reference = torch.ones(1000)
    assert error_of(reference, reference) == {"relative_error": 0.0, "sqnr_db": math.inf}
    measured = error_of(reference, reference + 0.1)  # noise power 1/100 of the signal's
    assert measured["sqnr_db"] == pytest.approx(20.0)
    assert measured["relative_error"] == pytest.approx(0.1)


def test_the_calls_come_from_the_originals_trajectory_first_to_last():
    model = accel.load(make_tiny_unet(), sampling={"steps": 10})
    calls = trajectory_calls(model, points=4)
    assert [call.step for call in calls] == [0, 3, 6, 9]
    assert calls[0].t[0] > calls[-1].t[0]  # from noise towards the image


def test_an_untouched_copy_is_exact_and_coarser_weights_are_further_from_the_original():
    model = accel.load(make_tiny_unet(), sampling={"steps": 6})
    calls = trajectory_calls(model, points=3)
    assert output_fidelity(model, copy.deepcopy(model), calls)["sqnr_db"] == math.inf
    w8, w3 = (output_fidelity(model, _quantized(model, bits), calls) for bits in (8, 3))
    assert len(w8["calls"]) == 3
    assert 0 < w3["sqnr_db"] < w8["sqnr_db"] < math.inf  # a quantizer that does nothing fails here
    assert w3["relative_error"] > w8["relative_error"] > 0
    samples = sample_fidelity(model, _quantized(model, 3))
    assert 0 < samples["relative_error"] < math.inf
