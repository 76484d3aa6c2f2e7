"""Datasets: synthetic faces, CelebA / FairFace / digits readers, Parquet shards, the Ray Data pipeline."""
