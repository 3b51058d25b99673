"""Metrics: feature extractors, reference statistics and protocol cards (``features``, with the
FID Inception network in ``inception``), the generation metrics (``generation``) and the
in-training FID probe (``probe``)."""
