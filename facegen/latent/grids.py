"""Picture grids for any ``LatentModel``: reconstructions, samples and latent traversals.

All take and draw images (N, 3, H, W) in [-1, 1]; ``save_png`` writes atomically (temp name, then rename).
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.utils import make_grid

from facegen.images import to_pil
from facegen.io import atomic_path
from facegen.models.base import LatentModel


def image_grid(images: torch.Tensor, nrow: int, scale: int = 2) -> Image.Image:
    """Tile images (N, 3, H, W) ``nrow`` to a row, upscaled ``scale`` times for viewing."""
    grid = to_pil(make_grid(images, nrow=nrow, padding=2, pad_value=1.0))
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST) if scale > 1 else grid


def save_png(image: Image.Image, path: str) -> str:
    """Write ``image`` as a PNG file at the local ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


@torch.no_grad()
def reconstruction_grid(model: LatentModel, images: torch.Tensor, nrow: int = 8,
                        cond: torch.Tensor | None = None) -> Image.Image:
    """Originals on odd rows, their reconstructions (decode of encode) on the rows below; ``cond`` (N, C): a
    conditional model's conditions of ``images``."""
    recon = model.decode(model.encode(images, cond))
    rows = []
    for start in range(0, images.shape[0], nrow):
        rows += [images[start:start + nrow], recon[start:start + nrow]]
    return image_grid(torch.cat(rows), nrow=nrow)


@torch.no_grad()
def sample_grid(model: LatentModel, n: int = 64, seed: int = 0, nrow: int = 8,
                cond: torch.Tensor | None = None) -> Image.Image:
    """n prior samples; a conditional model's under the conditions ``cond`` (M, C), cycled (real faces' ones:
    its all-zero default is a face with none of the attributes)."""
    generator = torch.Generator().manual_seed(seed)
    if cond is not None:
        cond = cond[torch.arange(n) % cond.shape[0]]
    return image_grid(model.sample(n, cond, generator=generator), nrow=nrow)


@torch.no_grad()
def most_active_dims(model: LatentModel, images: torch.Tensor, k: int,
                     cond: torch.Tensor | None = None) -> list[int]:
    """The ``k`` latent dimensions whose codes vary most over ``images``; a VAE's unused dimensions have
    near-zero variance, so these are the ones worth traversing. A conditional model's are among its condition
    entries (``cond`` (N, C): the images' conditions): sweeping one from 0 to 1 is the edit the model makes."""
    codes = model.encode(images, cond)
    candidates = model.part_indices(("condition",)) or list(range(codes.shape[1]))
    variance = codes[:, candidates].var(dim=0)
    return [candidates[i] for i in variance.argsort(descending=True)[:k].tolist()]


def traversal_values(codes: torch.Tensor, dims: list[int], steps: int, quantile: float = 0.02) -> torch.Tensor:
    """Sweep values per dimension, (len(dims), steps): from the ``quantile`` to the ``1 - quantile`` of
    that dimension over ``codes`` (N, D). Ranges come from data because a latent's scale is the family's
    own (an AE's codes are not unit-variance, a VAE's posterior means rarely are)."""
    low = codes[:, dims].quantile(quantile, dim=0)
    high = codes[:, dims].quantile(1 - quantile, dim=0)
    steps_01 = torch.linspace(0, 1, steps, device=codes.device)
    return low[:, None] + (high - low)[:, None] * steps_01[None, :]


@torch.no_grad()
def traverse(model: LatentModel, z: torch.Tensor, dims: list[int], values: torch.Tensor) -> torch.Tensor:
    """Decode ``z`` (D,) with dimension ``dims[i]`` set to each of ``values[i]`` (len(dims), S):
    returns (len(dims) * S, 3, H, W), one row per dimension, the other dimensions unchanged."""
    codes = z.expand(len(dims), values.shape[1], z.shape[-1]).clone()
    for row, dim in enumerate(dims):
        codes[row, :, dim] = values[row]
    return model.decode(codes.reshape(-1, z.shape[-1]))


@torch.no_grad()
def traversal_grid(model: LatentModel, images: torch.Tensor, dims: list[int], steps: int = 9,
                   cond: torch.Tensor | None = None) -> Image.Image:
    """One row per dimension in ``dims``: the first of ``images`` (N, 3, H, W) encoded, then that dimension
    swept over its range on all of them while the others keep their values; ``cond`` (N, C): a conditional
    model's conditions of ``images``."""
    codes = model.encode(images, cond)
    values = traversal_values(codes, dims, steps)
    return image_grid(traverse(model, codes[0], dims, values), nrow=steps)
