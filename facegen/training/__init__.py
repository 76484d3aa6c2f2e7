"""Ray Train harness: the one training loop, checkpoints, metrics, trainer builders."""
