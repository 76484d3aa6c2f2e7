"""The same reader/writer code path against a real S3 protocol server (moto on loopback).

Endpoint and credentials come only from the standard AWS env vars (see ``s3_bucket`` in conftest), exactly
as on a cluster pointed at S3 or MinIO.
"""

from __future__ import annotations

import boto3
import pyarrow.parquet as pq
import pytest

from facegen import io as fsio
from facegen.data.celeba import read_celeba
from facegen.data.shards import read_manifest, write_shards
from facegen.errors import DatasetError


def _upload(local_root, bucket: str, prefix: str) -> None:
    s3 = boto3.client("s3")  # endpoint from AWS_ENDPOINT_URL, like pyarrow
    for path in local_root.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local_root).as_posix()}")


def test_celeba_from_s3_to_s3(tmp_path, make_celeba, s3_bucket):
    expected = make_celeba(tmp_path, n=7, layout="csv")  # Kaggle layout: double image folder
    _upload(tmp_path, s3_bucket, "celeba")

    source = read_celeba(f"s3://{s3_bucket}/celeba")
    assert {r.key: r.split for r in source.records} == {k: e["split"] for k, e in expected.items()}
    out = f"s3://{s3_bucket}/shards"
    written = write_shards(source, out, resolution=16, rows_per_shard=2, progress=False, workers=2)

    manifest = read_manifest(out, verify=True)
    assert manifest == written and manifest.source == f"s3://{s3_bucket}/celeba"
    assert manifest.shard_uris("train")[0] == f"{out}/train/part-00000.parquet"
    fs, _ = fsio.resolve(out)
    rows = {}
    for split in manifest.splits:
        for uri in manifest.shard_uris(split):
            rows.update({r["key"]: r for r in pq.read_table(uri.removeprefix("s3://"), filesystem=fs).to_pylist()})
    assert {k: (r["split"], tuple(r["attrs"])) for k, r in rows.items()} == {
        k: (e["split"], e["attrs"]) for k, e in expected.items()}

    assert write_shards(read_celeba(f"s3://{s3_bucket}/celeba"), out, resolution=16, rows_per_shard=2,
                        progress=False, workers=1).reused
    rewritten = write_shards(source, out, resolution=16, rows_per_shard=10, progress=False, workers=1)
    names = sorted(fsio.list_files(fs, f"{s3_bucket}/shards", recursive=True))
    assert names == sorted(["manifest.json", *(s.path for v in rewritten.splits.values() for s in v)])


def test_s3_errors_name_the_uri(tmp_path, make_celeba, s3_bucket):
    make_celeba(tmp_path, n=4)
    (tmp_path / "img_align_celeba/000003.jpg").unlink()
    _upload(tmp_path, s3_bucket, "celeba")
    with pytest.raises(DatasetError, match=rf"s3://{s3_bucket}/celeba/list_attr_celeba\.txt line 5: image "
                                           rf"s3://{s3_bucket}/celeba/img_align_celeba/000003\.jpg is missing"):
        read_celeba(f"s3://{s3_bucket}/celeba")
    with pytest.raises(DatasetError, match="no manifest"):
        read_manifest(f"s3://{s3_bucket}/nothing-here")
