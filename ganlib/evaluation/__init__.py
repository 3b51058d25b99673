"""The evaluate stage's measurements, one module per task: :mod:`.generation` (FID and
friends against a real-vs-real floor), :mod:`.inpainting` (per hole-area bin, against
classical fills) and :mod:`.translation` (against the ground truth and the identity).

Each task's record names its module (:attr:`ganlib.tasks.base.Task.evaluator`), whose
``evaluate`` the evaluate stage runs; importing this package imports every one, so that the
stage's DVC deps follow them.
"""

from ganlib.evaluation import inpainting, translation
from ganlib.evaluation.generation import evaluate_generator, images_of

__all__ = ["evaluate_generator", "images_of", "inpainting", "translation"]
