"""Per-task pieces of the GAN: how G is fed, what D sees, and the losses of each phase."""
