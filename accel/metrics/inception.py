"""The standard FID feature network: TensorFlow's FID Inception-v3, in plain PyTorch, 2048-d pool3
features.

The architecture follows torchvision's ``Inception3`` (``torchvision/models/inception.py``:
BasicConv2d and the InceptionA-E blocks, BatchNorm eps 1e-3, no aux head, a 1008-class ``fc``) with
the changes pytorch-fid makes to reproduce TensorFlow's graph (``mseitzer/pytorch-fid``,
``src/pytorch_fid/inception.py``): the pooling branch of the A, C and first E blocks averages
without counting padding, and the last E block max-pools. Module names match torchvision's, so
pytorch-fid's weights file ``pt_inception-2015-12-05-6726825d.pth`` loads with ``strict=True``.
Nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from accel.core.errors import AccelError

INCEPTION_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_WEIGHTS_NAME}"
FEATURE_DIM = 2048
INPUT_SIZE = 299


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3), ReLU; state-dict keys ``conv.*`` and
    ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):  # TensorFlow's average pool leaves the zero padding out of the mean
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _max_pool(x):
    return F.max_pool2d(x, 3, stride=1, padding=1)


class InceptionA(nn.Module):  # Mixed_5b..5d, 35x35
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg_pool(x)),
            ],
            1,
        )


class InceptionB(nn.Module):  # Mixed_6a: 35x35 -> 17x17
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, 3, stride=2),
            ],
            1,
        )


class InceptionC(nn.Module):  # Mixed_6b..6e, 17x17, factorised 7x7
    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        dbl = x
        for i in range(1, 6):
            dbl = getattr(self, f"branch7x7dbl_{i}")(dbl)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
                dbl,
                self.branch_pool(_avg_pool(x)),
            ],
            1,
        )


class InceptionD(nn.Module):  # Mixed_7a: 17x17 -> 8x8
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat(
            [self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1
        )


# Mixed_7b (average pool) and Mixed_7c (max pool in the FID graph), 8x8
class InceptionE(nn.Module):
    def __init__(self, cin: int, pool=_avg_pool):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(b3),
                self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(dbl),
                self.branch3x3dbl_3b(dbl),
                self.branch_pool(self.pool(x)),
            ],
            1,
        )


class FIDInception(nn.Module):
    """FID Inception-v3. ``forward`` maps images in [0, 1] (N x 3 x H x W) to pool3 features (N x
    2048).

    ``fc`` (1008 classes) is unused for features; it is there so the weights file loads strictly.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool=_avg_pool)
        self.Mixed_7c = InceptionE(2048, pool=_max_pool)
        self.fc = nn.Linear(FEATURE_DIM, 1008)

    def forward(self, x):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # [0, 1] -> [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))  # adaptive average pool to 1x1 = pool3


def build_fid_inception() -> FIDInception:
    """The FID Inception network with random (scale-preserving) weights, in eval mode."""
    model = FIDInception()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.eval()


def _not_fid_weights(path: Path, detail: str) -> AccelError:
    return AccelError(
        f"{path} is not the FID Inception weights file {INCEPTION_WEIGHTS_NAME} ({detail})"
    )


class InceptionFeatures:
    """2048-d pool3 features of the FID Inception network, from a local weights file (never
    downloads)."""

    name = "inception-pool3"

    def __init__(
        self, weights_path: str | Path, device: str | torch.device = "cpu", batch_size: int = 64
    ):
        path = Path(weights_path)
        if not path.is_file():
            raise AccelError(
                f"FID Inception weights not found at {path}: download "
                f"{INCEPTION_WEIGHTS_NAME} (pytorch-fid release fid_weights, "
                f"{INCEPTION_WEIGHTS_URL}) on a machine with network access and pass its path"
            )
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file gets the same one-line message
            raise _not_fid_weights(path, f"cannot be read: {type(error).__name__}") from None
        if not isinstance(loaded, Mapping):
            raise _not_fid_weights(path, f"holds a {type(loaded).__name__}, not a state dict")

        model = build_fid_inception()
        expected = model.state_dict()
        # Files saved before BatchNorm had num_batches_tracked lack it; it does not affect eval-mode
        # outputs.
        state = {k: v for k, v in loaded.items()}
        for key in expected:
            if key.endswith(".num_batches_tracked"):
                state.setdefault(key, torch.zeros((), dtype=torch.long))
        missing, unexpected = (
            sorted(expected.keys() - state.keys()),
            sorted(state.keys() - expected.keys()),
        )
        if missing or unexpected:
            example = (missing or unexpected)[0]
            raise _not_fid_weights(
                path,
                f"{len(missing)} missing and {len(unexpected)} unexpected keys, e.g. {example!r}",
            )
        for key, tensor in expected.items():
            if not isinstance(state[key], torch.Tensor) or state[key].shape != tensor.shape:
                shape = tuple(getattr(state[key], "shape", ()))
                raise _not_fid_weights(
                    path, f"{key} has shape {shape}, expected {tuple(tensor.shape)}"
                )
        model.load_state_dict(state, strict=True)

        self.device = torch.device(device)
        self.network = model.to(self.device).eval()
        self.batch_size = max(1, int(batch_size))

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """images: uint8 array N x C x H x W with C == 1 or 3 (grey is repeated to 3 channels), any
        H, W. Returns float64 array N x 2048."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype != np.uint8:
            raise ValueError(
                f"inception features need uint8 N x (1|3) x H x W images, "
                f"got {images.dtype} {images.shape}"
            )
        out = np.empty((len(images), FEATURE_DIM), dtype=np.float64)
        for start in range(0, len(images), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + self.batch_size]))
            x = chunk.to(self.device).float() / 255.0
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            out[start : start + len(chunk)] = self.network(x).double().cpu().numpy()
        return out
