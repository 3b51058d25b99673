"""``translation_metrics``: a translator scored against the ground truth, the identity
baseline and the cycle."""

import math

import pytest
import torch
from torch import nn

from ganlib.evaluation.translation import translation_metrics
from ganlib.metrics.fidelity import PSNR_CAP_DB


class Shift(nn.Module):
    """A 'translator' that adds a constant: G(x) = x + offset (sides any multiple of 1)."""

    multiple = 1

    def __init__(self, offset: float):
        super().__init__()
        self.offset = nn.Parameter(torch.tensor(offset))

    def forward(self, x):
        return x + self.offset


def test_translation_metrics_with_pairs_scores_both_directions_and_the_baseline():
    a = torch.zeros(5, 3, 16, 16)
    b = torch.full((5, 3, 16, 16), 0.5)
    batches = [{"a": a[:3], "b": b[:3]}, {"a": a[3:], "b": b[3:]}]
    seen = []
    m = translation_metrics(batches, Shift(0.4), Shift(-0.5), on_batch=seen.append)
    # AtoB: 0.4 vs 0.5, error 0.1 on a range of 2: PSNR 10 log10(4 / 0.01)
    assert m["AtoB/psnr"] == pytest.approx(10 * math.log10(4 / 0.01))
    assert m["AtoB/l1"] == pytest.approx(0.05)
    assert m["BtoA/l1"] == 0.0 and m["BtoA/psnr"] == pytest.approx(PSNR_CAP_DB)
    assert m["identity/l1"] == pytest.approx(0.25)  # a itself vs b: 0.5 / 2
    assert m["identity/psnr"] == pytest.approx(10 * math.log10(4 / 0.25))
    assert m["cycle/A"] == pytest.approx(0.05)  # 0 -> 0.4 -> -0.1
    assert m["cycle/B"] == pytest.approx(0.05)  # 0.5 -> 0 -> 0.4
    assert (m["n/pairs"], m["n/A"], m["n/B"]) == (5, 5, 5)
    assert [sorted(x) for x in seen] == [["a", "b", "fake_a", "fake_b"]] * 2


def test_translation_metrics_of_single_domains_give_the_cycle_error_only():
    a = [{"a": torch.zeros(2, 3, 16, 16)}]
    b = [{"b": torch.full((4, 3, 16, 16), 0.5)}]
    m = translation_metrics(a + b, Shift(0.2), Shift(0.0))
    assert set(m) == {"cycle/A", "cycle/B", "n/pairs", "n/A", "n/B"}
    assert m["cycle/A"] == pytest.approx(0.1) and m["cycle/B"] == pytest.approx(0.1)
    paired_only = translation_metrics([{"a": torch.zeros(2, 3, 16, 16)}], Shift(0.2))
    assert set(paired_only) == {"n/pairs", "n/A", "n/B"}
