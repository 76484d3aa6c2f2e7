"""CelebA / FairFace readers: every label survives parsing, and each kind of broken dataset is named."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from facegen.attributes import CELEBA_ATTRIBUTES, FAIRFACE_LABELS
from facegen.data.celeba import read_celeba
from facegen.data.fairface import read_fairface
from facegen.data.records import NO_LABEL
from facegen.errors import DatasetError


@pytest.mark.parametrize("layout", ["txt", "csv"])
def test_celeba_labels_round_trip(tmp_path, make_celeba, layout):
    expected = make_celeba(tmp_path, n=10, layout=layout)
    source = read_celeba(str(tmp_path))
    assert source.name == "celeba" and source.crop == ("center", 140)
    assert source.attribute_names == CELEBA_ATTRIBUTES
    assert [r.key for r in source.records] == list(expected)
    for r in source.records:
        assert (r.split, r.attrs, r.identity) == (expected[r.key]["split"], expected[r.key]["attrs"],
                                                  expected[r.key]["identity"])
        assert (r.race, r.age, r.gender) == (NO_LABEL,) * 3
        assert source.filesystem.get_file_info(r.image_path).size > 0


def test_celeba_without_identity_file(tmp_path, make_celeba):
    make_celeba(tmp_path, n=4, layout="csv", identities=False)
    assert {r.identity for r in read_celeba(str(tmp_path)).records} == {NO_LABEL}


def test_celeba_header_subset_in_any_order_is_reordered(tmp_path, make_celeba):
    make_celeba(tmp_path, n=3, attrs=[[0] * 40] * 3)
    rows = ["000001.jpg 1 -1", "000002.jpg -1 1", "000003.jpg 1 1"]
    (tmp_path / "list_attr_celeba.txt").write_text("3\nSmiling Male\n" + "\n".join(rows) + "\n")
    source = read_celeba(str(tmp_path))
    assert source.attribute_names == ("Male", "Smiling")  # canonical order: Male (20) before Smiling (31)
    assert [r.attrs for r in source.records] == [(0, 1), (1, 0), (1, 1)]


def test_fairface_labels_and_val_test_halving(tmp_path, make_fairface):
    expected = make_fairface(tmp_path, n_train=6, n_val=5)
    source = read_fairface(str(tmp_path))
    assert source.name == "fairface" and source.crop == ("full",) and source.attribute_names == ()
    assert source.label_names == FAIRFACE_LABELS
    assert [r.key for r in source.records] == list(expected)
    for r in source.records:
        e = expected[r.key]
        assert (r.race, r.age, r.gender, r.identity) == (e["race"], e["age"], e["gender"], NO_LABEL)
        assert r.split == "train" if e["split"] == "train" else r.split in ("val", "test")
    splits = [r.split for r in source.records]
    assert (splits.count("val"), splits.count("test")) == (math.ceil(5 / 2), 5 // 2)
    assert splits == [r.split for r in read_fairface(str(tmp_path)).records]  # deterministic


def _edit(path: Path, line: int, change) -> None:
    """Replace 1-based ``line`` of ``path`` with ``change(old line)`` (None deletes it)."""
    lines = path.read_text().splitlines()
    new = change(lines[line - 1])
    lines[line - 1: line] = [] if new is None else [new]
    path.write_text("\n".join(lines) + "\n")


# name -> (layout, how to break the folder, substrings the one-line message must contain)
CORRUPTIONS = {
    "missing attr file": ("celeba", lambda d: (d / "list_attr_celeba.txt").unlink(), ["list_attr_celeba.txt"]),
    "short row": ("celeba", lambda d: _edit(d / "list_attr_celeba.txt", 7, lambda s: s.rsplit(" ", 1)[0]),
                  ["list_attr_celeba.txt line 7: expected 41 fields, got 40"]),
    "bad value": ("celeba", lambda d: _edit(d / "list_attr_celeba.txt", 4, lambda s: s[:-2] + " 0"),
                  ["list_attr_celeba.txt line 4: Young is '0', expected 1 or -1"]),
    "bad count line": ("celeba", lambda d: _edit(d / "list_attr_celeba.txt", 1, lambda s: "11"),
                       ["list_attr_celeba.txt line 1: count says 11 images but 10 rows follow"]),
    "unknown attribute": ("celeba", lambda d: _edit(d / "list_attr_celeba.txt", 2,
                                                    lambda s: s.replace("Smiling", "Smirking")),
                          ["list_attr_celeba.txt line 2: unknown attribute 'Smirking'"]),
    "bad partition code": ("celeba", lambda d: _edit(d / "list_eval_partition.txt", 3, lambda s: s[:-1] + "7"),
                           ["list_eval_partition.txt line 3: partition code is '7', expected 0, 1 or 2"]),
    "partition lacks image": ("celeba", lambda d: _edit(d / "list_eval_partition.txt", 5, lambda s: None),
                              ["list_attr_celeba.txt line 7: 000005.jpg is not in", "list_eval_partition.txt"]),
    "partition has extra": ("celeba", lambda d: _edit(d / "list_eval_partition.txt", 10,
                                                      lambda s: s + "\n000099.jpg 0"),
                            ["list_eval_partition.txt line 11: 000099.jpg is not in", "list_attr_celeba.txt"]),
    "identity lacks image": ("celeba", lambda d: _edit(d / "identity_CelebA.txt", 2, lambda s: None),
                             ["list_attr_celeba.txt line 4: 000002.jpg is not in", "identity_CelebA.txt"]),
    "missing image": ("celeba", lambda d: (d / "img_align_celeba/000006.jpg").unlink(),
                      ["list_attr_celeba.txt line 8: image", "000006.jpg is missing"]),
    "no image folder": ("celeba", lambda d: shutil.rmtree(d / "img_align_celeba"), ["no image folder"]),
    "unknown race": ("fairface", lambda d: _edit(d / "fairface_label_train.csv", 3,
                                                 lambda s: s.replace(s.split(",")[3], "Martian")),
                     ["fairface_label_train.csv line 3: unknown race 'Martian'"]),
    "fairface short row": ("fairface", lambda d: _edit(d / "fairface_label_val.csv", 2,
                                                       lambda s: s.rsplit(",", 1)[0]),
                           ["fairface_label_val.csv line 2: expected 5 fields, got 4"]),
    "fairface missing column": ("fairface", lambda d: _edit(d / "fairface_label_val.csv", 1,
                                                            lambda s: s.replace("gender", "sex")),
                                ["fairface_label_val.csv line 1: missing column 'gender'"]),
    "fairface missing image": ("fairface", lambda d: (d / "val/3.jpg").unlink(),
                               ["fairface_label_val.csv line 4: image", "val/3.jpg is missing"]),
    "fairface missing label file": ("fairface", lambda d: (d / "fairface_label_val.csv").unlink(),
                                    ["fairface_label_val.csv: missing"]),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_malformed_dataset_names_file_and_line(tmp_path, make_celeba, make_fairface, name):
    layout, corrupt, fragments = CORRUPTIONS[name]
    (make_celeba if layout == "celeba" else make_fairface)(tmp_path)
    corrupt(tmp_path)
    with pytest.raises(DatasetError) as info:
        (read_celeba if layout == "celeba" else read_fairface)(str(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_kaggle_csv_errors_name_line(tmp_path, make_celeba):
    make_celeba(tmp_path, layout="csv")
    _edit(tmp_path / "list_attr_celeba.csv", 3, lambda s: s.replace(",-1", ",x", 1).replace(",1", ",x", 1))
    with pytest.raises(DatasetError, match=r"list_attr_celeba\.csv line 3: \w+ is 'x', expected 1 or -1"):
        read_celeba(str(tmp_path))


def test_missing_source_folder(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        read_celeba(str(tmp_path / "nope"))
