"""Latent analysis for every ``LatentModel``: grids, traversals (more to come: directions, naming, metrics)."""
