"""The evaluate stage's measurements, one module per task: :mod:`.generation` (FID and
friends against a real-vs-real floor), :mod:`.inpainting` (per hole-area bin, against
classical fills) and :mod:`.translation` (against the ground truth and the identity)."""

from ganlib.evaluation.generation import evaluate_generator, images_of

__all__ = ["evaluate_generator", "images_of"]
