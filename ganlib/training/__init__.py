"""Training: the one GAN loop, its checkpoints, and the Ray Train / Ray Tune glue."""
