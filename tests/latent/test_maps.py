from __future__ import annotations

import numpy as np
import pytest
import torch

from facegen.latent.maps import latent_map, project_2d

PNG = b"\x89PNG\r\n\x1a\n"


def clustered_codes(n: int = 90, dim: int = 6, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Three well-separated clusters; returns codes (n, dim) and their class (n,)."""
    g = torch.Generator().manual_seed(seed)
    classes = np.arange(n) % 3
    centres = 6 * torch.eye(dim)[:3]
    return centres[classes] + torch.randn(n, dim, generator=g), classes


def is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == PNG


def test_pca_map_returns_the_principal_coordinates_and_draws_classes(tmp_path):
    codes, classes = clustered_codes()
    path = tmp_path / "maps" / "pca.png"
    coords = latent_map(codes, str(path), color=classes, class_names=["a", "b", "c"], color_label="cluster")
    assert coords.shape == (90, 2) and is_png(path)
    centred = codes.double().numpy() - codes.double().numpy().mean(0)
    top2 = np.linalg.svd(centred, full_matrices=False)[2][:2]
    assert np.allclose(np.abs(coords), np.abs(centred @ top2.T), atol=1e-6)  # PCA up to each axis's sign


def test_tsne_map_keeps_clusters_apart_with_a_continuous_colour(tmp_path):
    codes, classes = clustered_codes(n=60)
    path = tmp_path / "tsne.png"
    coords = latent_map(codes, str(path), color=codes[:, 0], method="tsne", color_label="z[0]")
    assert coords.shape == (60, 2) and is_png(path)
    centres = np.stack([coords[classes == c].mean(0) for c in range(3)])
    spread = max(np.linalg.norm(coords[classes == c] - centres[c], axis=1).mean() for c in range(3))
    gaps = [np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread


def test_map_without_a_path_only_projects_and_bad_inputs_fail(tmp_path):
    codes, _ = clustered_codes(n=20)
    assert latent_map(codes).shape == (20, 2) and not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="unknown map method 'umap'"):
        project_2d(codes, "umap")
    with pytest.raises(ValueError, match="one value per code"):
        latent_map(codes, str(tmp_path / "x.png"), color=np.zeros(5))
    with pytest.raises(ValueError, match="N >= 4 and D >= 2"):
        project_2d(codes[:, :1])
