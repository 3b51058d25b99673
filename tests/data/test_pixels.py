"""The one conversion between stored pixels and network values."""

import torch

from ganlib.data.pixels import quantize


def test_quantize_rounds_to_the_levels_of_stored_images():
    x = torch.tensor([-1.5, -1.0, -0.001, 0.5, 1.0, 2.0])
    q = quantize(x)
    assert q.min() == -1.0 and q.max() == 1.0
    levels = (q + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
