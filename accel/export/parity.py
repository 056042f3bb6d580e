"""The export's parity gate: the exported graph in ONNX Runtime against the PyTorch model on fresh
random inputs, at several timesteps and batch sizes."""

from __future__ import annotations

import numpy as np

PARITY_TIMESTEPS = (999, 500, 20)
PARITY_BATCHES = (2, 3)  # 3 differs from the traced batch: checks the dynamic batch axis
# max |ORT - PyTorch| / max |PyTorch| over the parity inputs, PyTorch being the float32 model in its
# exported form. It must separate export bugs (a wrong scale, axis or layout: errors of order 1 on
# every input) from arithmetic noise. Float graphs differ only by operator order (the goal:
# 1e-4). In a Q/DQ graph, an activation within float rounding of an INT8 rounding boundary can land
# one step (1/127 of its range) apart, and the step propagates: measured at 6.4e-3 on the reference
# model at W8A8, and 4.1e-2 on one of six inputs of the random tiny text UNet at W4A8 (a third of
# its outputs moved). 5e-2 allows such a step, not a bug. fp16 graphs are compared with the float32
# model: fp16's 2^-11 rounding over the network's depth measured 1e-3 or less; 1e-2 is the fp16
# tolerance `accel optimize` uses.
TOLERANCE = {
    ("float", "fp32"): 1e-4,
    ("qdq", "fp32"): 5e-2,
    ("float", "fp16"): 1e-2,
    ("qdq", "fp16"): 5e-2,
}


def parity_inputs(denoiser, seed: int = 1234) -> list[tuple]:
    """Fresh random (x, t, cond) at several timesteps and batch sizes, as float32 CPU tensors, and
    a guidance-distilled student's weights (drawn across its range)."""
    import torch

    inputs = []
    for batch in PARITY_BATCHES:
        for index, t in enumerate(PARITY_TIMESTEPS):
            x, steps, cond = denoiser.example_inputs(batch, t=t, seed=seed + 10 * batch + index)
            args = (x.float().cpu(), steps.cpu(), None if cond is None else cond.cpu())
            if denoiser.guidance_range:
                low, high = denoiser.guidance_range
                generator = torch.Generator().manual_seed(seed + batch + index)
                args += (low + (high - low) * torch.rand(batch, generator=generator),)
            inputs.append(args)
    return inputs


def check_parity(
    path: str, names: list[str], inputs: list[tuple], expected: list[np.ndarray], tolerance: float
) -> dict:
    """ONNX Runtime (CPU; CUDA first where installed) against the PyTorch outputs on the same
    inputs."""
    from accel.export.ort_session import ort_session

    session = ort_session(path)
    got = [output.astype(np.float32) for output in _run(session, names, inputs, "eps")]
    worst_abs = max(float(np.abs(a - b).max()) for a, b in zip(got, expected))
    worst_rel = max_rel(got, expected)
    return {
        "provider": session.get_providers()[0],
        "inputs": len(inputs),
        "timesteps": list(PARITY_TIMESTEPS),
        "batches": list(PARITY_BATCHES),
        "max_abs": worst_abs,
        "max_rel": worst_rel,
        "tolerance": tolerance,
        "met": worst_rel <= tolerance,
    }


def ort_outputs(path: str, names: list[str], inputs: list[tuple], output: str) -> list[np.ndarray]:
    from accel.export.ort_session import ort_session

    return _run(ort_session(path), names, inputs, output)


def _run(session, names: list[str], inputs: list[tuple], output: str) -> list[np.ndarray]:
    """``output`` of ``session`` for each input tuple (None entries, absent conditioning,
    skipped)."""
    feeds = [
        {name: tensor.numpy() for name, tensor in zip(names, (t for t in args if t is not None))}
        for args in inputs
    ]
    return [session.run([output], feed)[0] for feed in feeds]


def max_rel(outputs: list[np.ndarray], references: list[np.ndarray]) -> float:
    """max |output - reference| / max |reference|, the worst over the pairs."""
    return max(
        float(np.abs(o - r).max()) / max(float(np.abs(r).max()), 1e-12)
        for o, r in zip(outputs, references)
    )
