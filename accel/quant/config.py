"""QuantConfig: what to quantize, at which bits, with which recipe. Round-trips to JSON."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from accel.errors import AccelError
from accel.quant.quantizer import RANGE_METHODS

CALIB_POLICIES = ("uniform", "normal", "last")

# Layers that see only the timestep (or class) embedding, plus the first and last layer of the network (found
# by tracing), stay at 8 bits by default: Q-Diffusion keeps the first and last layers at 8 bits, TFMQ-DM shows
# the time-embedding path is the most sensitive, and NVIDIA's diffusers recipe keeps both out of INT8 entirely.
# They hold under 10% of the reference model's weights.
DEFAULT_EIGHT_BIT = ("*time_embedding*", "*time_emb_proj*", "*timestep_embedder*", "*class_embedding*",
                     "*norm1.linear*", "*proj_out_1*")  # the last two: DiT adaLN from (t, class) only


@dataclass
class QuantConfig:
    w_bits: int = 4
    a_bits: int | None = 8                        # None: weight-only
    w_symmetric: bool = True                      # symmetric = zero point 0 = exportable
    a_symmetric: bool = True
    w_range: str = "mse"                          # how weight ranges are chosen (mse, minmax, percentile)
    a_range: str = "mse"
    group_size: int | None = None                 # linear weights: scales per group of input channels
    quantize_attention: bool = True               # the Q·K^T and P·V inputs
    split_shortcut: bool = True                   # Q-Diffusion split at decoder skip concatenations
    protect_ends: bool = True                     # first layer W8, float input; last layer float (plan_layers)
    eight_bit: tuple[str, ...] = DEFAULT_EIGHT_BIT  # module-name patterns kept at 8 bits
    layer_bits: dict[str, int] = field(default_factory=dict)  # pattern -> weight bits, overrides the above
    skip: tuple[str, ...] = ()                    # patterns left in floating point
    calib_policy: str = "uniform"
    calib_samples: int = 64                       # sampler trajectories
    calib_steps: int = 50                         # DDIM steps of those trajectories
    calib_every: int = 5                          # keep every k-th step (uniform policy)
    recon_iters: int = 0                          # BRECQ/AdaRound iterations per block (0: none)
    seed: int = 0

    def __post_init__(self):
        self.eight_bit, self.skip = tuple(self.eight_bit), tuple(self.skip)
        if not 2 <= self.w_bits <= 8:
            raise AccelError(f"--bits must be between 2 and 8, got {self.w_bits}")
        if self.a_bits is not None and not 4 <= self.a_bits <= 16:
            raise AccelError(f"--act-bits must be between 4 and 16, got {self.a_bits}")
        for name, value in (("w_range", self.w_range), ("a_range", self.a_range)):
            if value not in RANGE_METHODS:
                raise AccelError(f"{name} must be one of {', '.join(RANGE_METHODS)}, got {value}")
        if self.calib_policy not in CALIB_POLICIES:
            raise AccelError(f"--calib-policy must be one of {', '.join(CALIB_POLICIES)}, got {self.calib_policy}")
        if self.calib_samples < 1 or self.calib_steps < 1 or self.calib_every < 1 or self.recon_iters < 0:
            raise AccelError("calibration sizes must be positive and --recon-iters non-negative")
        for pattern, bits in self.layer_bits.items():
            if not 2 <= bits <= 8:
                raise AccelError(f"layer_bits[{pattern!r}] must be between 2 and 8, got {bits}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "QuantConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise AccelError(f"unknown quantization settings: {', '.join(sorted(unknown))}")
        return cls(**data)


W8A8 = QuantConfig(w_bits=8, a_bits=8)
W4A8 = QuantConfig(w_bits=4, a_bits=8)
