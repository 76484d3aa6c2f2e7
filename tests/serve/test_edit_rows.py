"""A batch of edits through local models (no Ray): rows asking the same edit are moved in one call, and the
answer is the one each row gets alone; a row whose edit fails fails alone; the batch's PNGs are its pictures."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
import torch
from PIL import Image

from facegen.images import to_uint8
from serve.catalog import ModelCatalog
from serve.edits import EditSpec, run_edit_rows


def _run(catalog: ModelCatalog, images: torch.Tensor, specs: list[EditSpec]):
    model = catalog.generator

    async def encode(rows, cond):
        return model.encode(rows, cond)

    async def decode(codes):
        return model.decode(codes).clamp(-1, 1)

    with torch.inference_mode():
        return asyncio.run(run_edit_rows(images, None, specs, encode, decode, None, model,
                                         catalog.directions.get, conditions=catalog.conditions))


def test_a_batch_answers_each_row_as_it_would_alone(tiny_bundles):
    torch.manual_seed(0)
    catalog = ModelCatalog(tiny_bundles["vae"])
    name = catalog.direction_method()
    smile, male = EditSpec({"Smiling": 1.5}, [], name, name), EditSpec({"Male": -1.0}, [], name, name)
    broken = EditSpec({"Smiling": 1.0}, [], name, "no such directions")  # fails inside the batch
    specs = [smile, male, smile, broken, smile, male]
    images = torch.rand(len(specs), 3, catalog.resolution, catalog.resolution) * 2 - 1

    batch = _run(catalog, images, specs)
    assert [error is not None for error in batch.errors] == [False, False, False, True, False, False]
    for i, spec in enumerate(specs):
        alone = _run(catalog, images[i:i + 1], [spec])
        assert alone.errors[0] == batch.errors[i]
        torch.testing.assert_close(batch.edited[i], alone.edited[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batch.reconstructions[i], alone.reconstructions[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batch.edited[0], batch.reconstructions[0], atol=1e-3)  # the edit moved something
    torch.testing.assert_close(batch.edited[3], batch.reconstructions[3])  # the failed row was not moved

    batch.encode_pictures()
    assert len(batch.edited_png) == len(batch.reconstruction_png) == len(specs)
    for text, picture in zip(batch.edited_png + batch.reconstruction_png,
                             torch.cat([batch.edited, batch.reconstructions])):
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(text)), formats=["PNG"]))
        assert np.array_equal(decoded, to_uint8(picture))  # lossless, whatever the zlib level
