"""ganlib: a distributed GAN training pipeline for images."""

__version__ = "0.1.0"
