"""The one conversion between stored pixels and network values."""

import torch

from ganlib.data.pixels import batch_for, quantize
from ganlib.tasks.generation import Generation


def test_quantize_rounds_to_the_levels_of_stored_images():
    x = torch.tensor([-1.5, -1.0, -0.001, 0.5, 1.0, 2.0])
    q = quantize(x)
    assert q.min() == -1.0 and q.max() == 1.0
    levels = (q + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)


def test_batches_shrink_with_the_pixels_of_an_image():
    assert [batch_for(r, 250) for r in (16, 32, 64)] == [250, 250, 250]  # unchanged up to 64
    assert [batch_for(r, 250) for r in (128, 256, 512, 1024)] == [62, 15, 3, 1]
    assert batch_for(1024, 64) == 1 and batch_for(32, 7) == 7


def test_a_high_resolution_sample_grid_runs_g_on_bounded_batches():
    """The training's 64-image sheet at 256 px: 16 forward passes of 4, the same images."""
    seen = []

    class Recorder(torch.nn.Module):
        config = {"z_dim": 3, "resolution": 256, "num_classes": 0}

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, z, labels=None):
            seen.append(len(z))
            return (z[:, :1, None, None] * self.w).expand(-1, 3, 256, 256)

    z = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    grid = Generation().grid_images(Recorder(), {"z": z})
    assert seen == [4] * 16 and grid.shape == (64, 3, 256, 256)
    assert torch.equal(grid[:, 0, 0, 0], z[:, 0].clamp(-1, 1))
