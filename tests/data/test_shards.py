"""Shard writer, manifest and ``facegen prepare``: exact round trips, idempotency, balance, checksums."""

from __future__ import annotations

import argparse
import hashlib
from collections import Counter

import pyarrow.parquet as pq
import pytest
from PIL import Image

from facegen.data.celeba import read_celeba
from facegen.data.fairface import read_fairface
from facegen.data.prepare import add_prepare_arguments, run_prepare
from facegen.data.records import FaceRecord, SourceDataset
from facegen.data.image_format import decode_face
from facegen.data.shards import balance_splits, read_manifest, shard_schema, write_shards
from facegen.errors import DatasetError, FacegenError
from facegen.images import preprocess


def _rows(manifest, split=None):
    """All rows of the manifest's shards (or one split's) as dicts, keyed by ``key``."""
    splits = [split] if split else list(manifest.splits)
    out = {}
    for s in splits:
        for uri in manifest.shard_uris(s):
            table = pq.read_table(uri)
            assert table.schema.equals(shard_schema(manifest.image_format, manifest.resolution))
            out.update({row["key"]: row for row in table.to_pylist()})
    return out


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_celeba_round_trip_is_exact(tmp_path, make_celeba):
    expected = make_celeba(tmp_path / "src", n=11)
    source = read_celeba(str(tmp_path / "src"))
    manifest = write_shards(source, str(tmp_path / "out"), resolution=32, rows_per_shard=3, progress=False,
                            workers=1)
    assert (manifest.rows("train"), manifest.rows("val"), manifest.rows("test")) == (7, 2, 2)
    assert [len(manifest.splits[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    rows = _rows(manifest)
    assert set(rows) == set(expected)
    for key, row in rows.items():
        e = expected[key]
        assert (row["split"], tuple(row["attrs"]), row["identity"]) == (e["split"], e["attrs"], e["identity"])
        assert (row["race"], row["age"], row["gender"]) == (-1, -1, -1)
        decoded = decode_face(row["image"], manifest.image_format, 32)  # raw by default
        want = preprocess(Image.open(tmp_path / "src/img_align_celeba" / key), ("center", 140), 32)
        assert decoded.tobytes() == want.tobytes()
    assert manifest.attribute_names == source.attribute_names
    assert read_manifest(str(tmp_path / "out")) == manifest


def test_fairface_round_trip(tmp_path, make_fairface):
    expected = make_fairface(tmp_path / "src")
    manifest = write_shards(read_fairface(str(tmp_path / "src")), str(tmp_path / "out"), resolution=16,
                            progress=False, workers=1)
    rows = _rows(manifest)
    assert set(rows) == set(expected)
    for key, row in rows.items():
        for head in ("race", "age", "gender"):
            assert row[head] == expected[key][head]
        assert row["attrs"] == [] and row["identity"] == -1
        assert decode_face(row["image"], manifest.image_format, 16).shape == (16, 16, 3)
    assert manifest.label_names["race"][0] == "White"
    assert manifest.rows("val") + manifest.rows("test") == 5 and manifest.rows("test") == 2


def test_rerun_is_idempotent_and_parameter_change_rewrites(tmp_path, make_celeba):
    make_celeba(tmp_path / "src", n=10)
    source = read_celeba(str(tmp_path / "src"))
    out = tmp_path / "out"
    first = write_shards(source, str(out), resolution=16, rows_per_shard=2, progress=False, workers=1)
    assert not first.reused and (out / "train/part-00002.parquet").exists()
    before = _mtimes(out)
    again = write_shards(read_celeba(str(tmp_path / "src")), str(out), resolution=16, rows_per_shard=2,
                         progress=False, workers=1)
    assert again.reused and again == first
    assert _mtimes(out) == before  # nothing touched, not even the manifest

    (out / "train/part-00007.parquet.tmp-0a1b").write_bytes(b"left by a crash")
    (out / "train/notes.txt").write_text("not ours")
    changed = write_shards(source, str(out), resolution=16, rows_per_shard=100, progress=False, workers=1)
    assert not changed.reused and changed.params["rows_per_shard"] == 100
    assert sorted(p.name for p in (out / "train").iterdir()) == ["notes.txt", "part-00000.parquet"]
    assert read_manifest(str(out), verify=True) == changed


def test_deleted_shard_triggers_rewrite(tmp_path, make_celeba):
    make_celeba(tmp_path / "src", n=5)
    source = read_celeba(str(tmp_path / "src"))
    write_shards(source, str(tmp_path / "out"), resolution=8, progress=False, workers=1)
    (tmp_path / "out/val/part-00000.parquet").unlink()
    assert not write_shards(source, str(tmp_path / "out"), resolution=8, progress=False, workers=1).reused
    assert (tmp_path / "out/val/part-00000.parquet").exists()


def test_pool_output_is_byte_identical_and_checksums_match(tmp_path, make_celeba):
    make_celeba(tmp_path / "src", n=12)
    source = read_celeba(str(tmp_path / "src"))
    solo = write_shards(source, str(tmp_path / "a"), resolution=16, rows_per_shard=4, progress=False, workers=1)
    pool = write_shards(source, str(tmp_path / "b"), resolution=16, rows_per_shard=4, progress=False, workers=2)
    assert pool.splits == solo.splits
    for shard in (s for shards in pool.splits.values() for s in shards):
        data = (tmp_path / "b" / shard.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard.sha256 and len(data) == shard.size


def test_verify_detects_tampering_and_bad_manifests(tmp_path, make_celeba):
    make_celeba(tmp_path / "src", n=5)
    out = tmp_path / "out"
    write_shards(read_celeba(str(tmp_path / "src")), str(out), resolution=8, progress=False, workers=1)
    shard = out / "train/part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    read_manifest(str(out))  # cheap read does not look at shards
    with pytest.raises(DatasetError, match=r"part-00000\.parquet: missing or checksum differs"):
        read_manifest(str(out), verify=True)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"manifest\.json: corrupt manifest"):
        read_manifest(str(out / "manifest.json"))
    with pytest.raises(DatasetError, match="no manifest"):
        read_manifest(str(tmp_path / "elsewhere"))


def test_corrupt_jpeg_aborts_only_when_strict(tmp_path, make_celeba):
    make_celeba(tmp_path / "src", n=6)
    bad = tmp_path / "src/img_align_celeba/000004.jpg"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated mid-scan
    source = read_celeba(str(tmp_path / "src"))
    for workers in (1, 2):
        with pytest.raises(DatasetError, match=r"img_align_celeba/000004\.jpg: cannot decode image"):
            write_shards(source, str(tmp_path / f"out{workers}"), resolution=8, progress=False, workers=workers,
                         strict=True)
    assert not (tmp_path / "out1/manifest.json").exists()


def test_undecodable_images_are_skipped_listed_and_rechecked(tmp_path, make_celeba, capsys):
    expected = make_celeba(tmp_path / "src", n=10)
    images = tmp_path / "src/img_align_celeba"
    good = (images / "000004.jpg").read_bytes()
    (images / "000004.jpg").write_bytes(good[:300])  # truncated JPEG
    (images / "000007.jpg").write_text("not an image at all")
    source = read_celeba(str(tmp_path / "src"))
    out = tmp_path / "out"
    for workers in (2, 1):  # the pool and the in-process path agree; the second run rewrites nothing
        manifest = write_shards(source, str(out), resolution=8, rows_per_shard=3, progress=False, workers=workers)
    assert manifest.reused
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("warning: ") and w.endswith("; skipped") for w in warnings)
    assert [s["key"] for s in manifest.skipped] == ["000004.jpg", "000007.jpg"]
    assert all(s["path"].endswith(s["key"]) and s["reason"] for s in manifest.skipped)
    assert set(_rows(manifest)) == set(expected) - {"000004.jpg", "000007.jpg"}
    # 000007 (train) and 000004 (val) left out; the train shards still fill to 3 rows
    assert [s.rows for s in manifest.splits["train"]] == [3, 2] and manifest.rows("val") == 1
    assert read_manifest(str(out), verify=True) == manifest  # `skipped` survives the JSON round trip
    with pytest.raises(DatasetError, match=r"000004\.jpg: cannot decode image"):  # --strict on a reused one
        write_shards(source, str(out), resolution=8, rows_per_shard=3, progress=False, workers=1, strict=True)

    (images / "000004.jpg").write_bytes(good)  # repaired: the next run takes it in
    repaired = write_shards(source, str(out), resolution=8, rows_per_shard=3, progress=False, workers=1)
    assert not repaired.reused and [s["key"] for s in repaired.skipped] == ["000007.jpg"]
    assert "000004.jpg" in _rows(repaired, "val")


def test_missing_or_all_undecodable_images_stay_errors(tmp_path, make_celeba):
    make_celeba(tmp_path / "src", n=4)
    images = tmp_path / "src/img_align_celeba"
    source = read_celeba(str(tmp_path / "src"))
    (images / "000002.jpg").unlink()  # vanished after the reader checked it: the source is changing
    with pytest.raises(DatasetError, match=r"000002\.jpg: image is missing"):
        write_shards(source, str(tmp_path / "a"), resolution=8, progress=False, workers=1)
    for key in ("000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"):
        (images / key).write_bytes(b"")
    with pytest.raises(DatasetError, match="none of the 4 images could be decoded; first: "):
        write_shards(read_celeba(str(tmp_path / "src")), str(tmp_path / "b"), resolution=8, progress=False,
                     workers=1)


def test_balance_equalises_positive_rates(tmp_path, make_celeba):
    # 40 images, splits 20/10/10; Smiling (31) and Male (20) all-positive in train, all-negative elsewhere.
    n = 40
    splits = [0] * 20 + [1] * 10 + [2] * 10
    attrs = [[0] * 40 for _ in range(n)]
    for i in range(n):
        attrs[i][31] = int(i < 16 or i == 20)  # 17 smiling: strata sizes are not multiples of 4
        attrs[i][20] = int(i % 2 == 0 and i < 24)
    make_celeba(tmp_path / "src", n=n, splits=splits, attrs=attrs, identities=False)
    source = read_celeba(str(tmp_path / "src"))
    manifest = write_shards(source, str(tmp_path / "out"), resolution=8, balance=["Smiling", "Male"],
                            progress=False, workers=1)
    assert [manifest.rows(s) for s in ("train", "val", "test")] == [20, 10, 10]
    rows = _rows(manifest)
    joint = {s: Counter((r["attrs"][31], r["attrs"][20]) for r in rows.values() if r["split"] == s)
             for s in ("train", "val", "test")}
    totals = Counter((a[31], a[20]) for a in attrs)
    for split, size in (("train", 20), ("val", 10), ("test", 10)):
        for stratum, count in totals.items():
            assert abs(joint[split][stratum] - count * size / n) < 1  # within 1 of proportional


def test_balance_exact_rates_and_identity_groups():
    def source(identity):  # 40 records: 20 train then 20 val; the first 20 (all train) smile
        records = [FaceRecord(key=f"{i:03d}", image_path="", split="train" if i < 20 else "val",
                              attrs=(int(i < 20),), identity=identity(i)) for i in range(40)]
        return SourceDataset("celeba", "", None, records, attribute_names=("Smiling",))

    def smiling(records, split):
        chosen = [r for r in records if r.split == split]
        return len(chosen), sum(r.attrs[0] for r in chosen)

    flat = balance_splits(source(lambda i: -1), ["Smiling"], seed=3)
    assert smiling(flat, "train") == smiling(flat, "val") == (20, 10)  # rate exactly 0.5 each
    for size, tolerance in ((2, 0), (4, 4)):  # 20 identities of 2 images, then 10 of 4 (5 smiling: odd)
        grouped = balance_splits(source(lambda i: i // size), ["Smiling"], seed=3)
        split_of = {}
        for r in grouped:
            assert split_of.setdefault(r.identity, r.split) == r.split  # no identity spans two splits
        (n_train, pos_train), (n_val, pos_val) = smiling(grouped, "train"), smiling(grouped, "val")
        assert n_train == n_val == 20 and abs(pos_train - pos_val) <= tolerance

    with pytest.raises(FacegenError, match="unknown attribute 'Smirking'"):
        balance_splits(source(lambda i: -1), ["Smirking"], seed=0)


def _parse(argv):
    parser = argparse.ArgumentParser(prog="facegen prepare")
    add_prepare_arguments(parser)
    return parser.parse_args(argv)


def test_run_prepare_end_to_end_and_errors(tmp_path, make_celeba, capsys):
    make_celeba(tmp_path / "src", n=5)
    args = ["--dataset", "celeba", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
            "--resolution", "8", "--no-progress", "--workers", "1"]
    assert run_prepare(_parse(args)) == 0
    assert run_prepare(_parse(args)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("prepare celeba: wrote train 3, val 1, test 1 rows at 8px; manifest ")
    assert "already up to date" in lines[1] and len(lines) == 2

    bad = _parse(["--dataset", "celeba", "--src", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert run_prepare(bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing: no such folder" in err and "\n" not in err

    assert run_prepare(_parse([*args, "--balance", "Smiling,Nope"])) == 2
    assert "unknown attribute 'Nope'" in capsys.readouterr().err


def test_run_prepare_skips_undecodable_unless_strict(tmp_path, make_celeba, capsys):
    make_celeba(tmp_path / "src", n=5)
    (tmp_path / "src/img_align_celeba/000002.jpg").write_bytes(b"GIF89a not a jpeg")
    args = ["--dataset", "celeba", "--src", str(tmp_path / "src"), "--resolution", "8", "--no-progress",
            "--workers", "1"]
    assert run_prepare(_parse([*args, "--out", str(tmp_path / "strict"), "--strict"])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "000002.jpg: cannot decode image" in err
    assert run_prepare(_parse([*args, "--out", str(tmp_path / "out")])) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("warning: ")
    assert "000002.jpg: cannot decode image" in captured.err
    assert captured.out.startswith("prepare celeba: wrote train 2, val 1, test 1 rows at 8px; "
                                   "skipped 1 undecodable image (listed in the manifest); manifest ")
    assert read_manifest(str(tmp_path / "out")).skipped[0]["key"] == "000002.jpg"
