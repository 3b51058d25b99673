"""Metrics: pure functions of images, features and networks. Feature extractors
(``extractors``, with the FID Inception network in ``inception``), reference statistics
(``reference``), the protocol card (``protocol``), the generation metrics (``generation``),
fidelity to a ground truth (``fidelity``) and the inpainting table (``inpainting``). Nothing
here imports task, training or evaluation code (tests/test_repo.py checks)."""
