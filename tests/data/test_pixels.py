"""The one conversion between stored pixels and network values."""

import itertools
import json
import numpy as np
import pytest
import torch
from ganlib.artifacts import EXTRACTOR_WEIGHTS, load_extractor, save_extractor
from ganlib.data.loader import iter_split
from ganlib.data.pixels import quantize
from ganlib.data.records import Sample
from ganlib.data.shards import write_shards
from ganlib.errors import GanlibError
from ganlib.featurize.classifier import train_classifier
from ganlib.metrics.extractors import (
    ClassifierNet,
    RandomNet,
    check_compatible,
    file_sha256,
    load_inception,
    random_extractor,
)
from ganlib.metrics.generation import fid_from_stats, mean_cov
from ganlib.metrics.inception import FIDInceptionV3
from ganlib.metrics.protocol import RANDOM_NOTE, protocol_card, protocol_hash
from ganlib.metrics.reference import (
    REFERENCE,
    compute_features,
    compute_outputs,
    load_reference,
    save_reference,
)
from ganlib.models.dcgan import Generator
from ganlib.tasks.generation import FidProbe


def test_quantize_rounds_to_the_levels_of_stored_images():
    x = torch.tensor([-1.5, -1.0, -0.001, 0.5, 1.0, 2.0])
    q = quantize(x)
    assert q.min() == -1.0 and q.max() == 1.0
    levels = (q + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)

