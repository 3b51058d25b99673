"""PatchGAN discriminator of pix2pix (Isola et al. 2017), the "70x70" one with ``n_layers=3``.

``D(x [N, in_channels, H, W]) -> logits [N, 1, h, w]``: one raw logit per overlapping patch
rather than per image, so D judges local texture and G's L1 loss keeps the low frequencies.
It is conditional by its input: inpainting passes the image and the mask
(``in_channels = C + 1``), pix2pix the input and the output image (``C_A + C_B``). The
adversarial losses of :mod:`ganlib.losses` average over any logit shape, so they take the map
as it is.

Layers: Conv 4x4 / stride 2 + LeakyReLU(0.2) (no norm on the input layer); ``n_layers - 1``
more stride-2 convs with doubling channels (capped at 8 * width) + norm + LeakyReLU; one
stride-1 conv + norm + LeakyReLU; a stride-1 conv to one channel. With 3 layers each logit
sees 70x70 input pixels; at 64x64 input the map is 6x6.

Norm: ``"instance"`` by default, not pix2pix's BatchNorm. With BatchNorm D's output for one
image depends on the rest of its batch, and the training loop sends real and fake through D
as separate forwards (each followed by its own backward, for DDP), so D could tell a real batch
from a fake one by its statistics instead of judging images; each DDP rank normalises over its
own share of the batch (a different D for every world size); and per-sample gradient
penalties (R1, WGAN-GP) are not defined when samples are mixed. Instance norm has none of
this, and no running statistics, so D is the same function in train and eval mode and DDP has
no buffers to broadcast. ``spectral=True`` puts spectral norm (Miyato et al. 2018) on every
conv, as in DeepFill v2's SN-PatchGAN; use it with ``norm="none"`` for that discriminator.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ganlib.models.base import SavedConfig
from ganlib.models.layers import NORMS, norm_layer


class PatchDiscriminator(SavedConfig):
    """PatchGAN: ``D(x [N, in_channels, H, W]) -> logits [N, 1, H/2^n - 2, W/2^n - 2]``.

    ``n = n_layers``; H and W must be at least ``3 * 2 ** n_layers`` (24 for 3 layers), so that
    every normalised feature map has more than one pixel.
    """

    arch = "patchgan"

    def __init__(
        self,
        in_channels: int,
        width: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
        spectral: bool = False,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")
        chs = [min(width * 2**i, 8 * width) for i in range(n_layers + 1)]
        strides = [2] * n_layers + [1]
        layers: list[nn.Module] = []
        for i, (c_in, c_out, stride) in enumerate(
            zip([in_channels, *chs[:-1]], chs, strides, strict=True)
        ):
            first = i == 0  # pix2pix: no norm on the input layer
            layers += [
                self._conv(c_in, c_out, stride, bias=first or norm == "none"),
                nn.Identity() if first else norm_layer(norm, c_out),
                nn.LeakyReLU(0.2),
            ]
        layers.append(self._conv(chs[-1], 1, 1, bias=True))
        self.features = nn.Sequential(*layers)

    def _conv(self, c_in: int, c_out: int, stride: int, *, bias: bool) -> nn.Module:
        """A 4x4 conv with pix2pix's init, N(0, 0.02) weights and zero bias, done before spectral
        norm wraps the weight (afterwards ``.weight`` is a computed tensor)."""
        conv = nn.Conv2d(c_in, c_out, 4, stride, 1, bias=bias)
        nn.init.normal_(conv.weight, 0.0, 0.02)
        if bias:
            nn.init.zeros_(conv.bias)
        return spectral_norm(conv) if self.config["spectral"] else conv

    @property
    def min_size(self) -> int:
        """The smallest input side: ``3 * 2 ** n_layers``."""
        return 3 * 2 ** self.config["n_layers"]

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, list]:
        """``logits [N, 1, h, w]``; with ``return_features``, ``(logits, features)``: the
        output of every LeakyReLU, ``n_layers + 1`` maps from fine to coarse (for feature
        matching, :func:`ganlib.losses.feature_matching`)."""
        c = self.config["in_channels"]
        if x.dim() != 4 or x.shape[1] != c or min(x.shape[2:]) < self.min_size:
            raise ValueError(
                f"x must be [N, {c}, H, W] with H, W >= {self.min_size}, got {list(x.shape)}"
            )
        if not return_features:
            return self.features(x)  # [N, 1, h, w]
        features = []
        h = x
        for layer in self.features:
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU):
                features.append(h)
        return h, features
