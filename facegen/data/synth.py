"""The embedded synthetic face dataset: procedural faces with known factors, in CelebA or FairFace layout.

``facegen synth --out DIR --n N --seed S --layout celeba|fairface`` writes a folder the real readers read:

* celeba: ``img_align_celeba/000001.jpg`` (178x218), ``list_attr_celeba.txt``, ``list_eval_partition.txt``
  (contiguous 80/10/10 train/val/test blocks with disjoint identities, like the real split) and
  ``identity_CelebA.txt`` (about n/5 identities, each with fixed skin, face shape, hair colour, gender, race
  and age, varying pose, expression and accessories).
* fairface: ``train/1.jpg`` / ``val/1.jpg`` (224x224), ``fairface_label_{train,val}.csv`` (85/15 split).

Both get ``factors.parquet``: per image its ``key``, the 40 CelebA attributes as int8 0/1 (unrendered: 0),
the continuous factors as float32 and the FairFace / hair / identity indices.

Image ``i`` is drawn from ``default_rng([seed, i])``, its base factors from ``default_rng([seed, id, 1])``
(id: its CelebA identity, or ``i`` for FairFace): the bytes depend on (seed, n, layout), never on workers.
Output goes to ``<out>.tmp-<uuid>``, renamed into place at the end; a non-empty ``out`` is refused.
``--counterfactuals DATASET`` writes ground-truth counterfactual test sets instead (``counterfactual.py``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from facegen.attributes import CELEBA_ATTRIBUTES, FAIRFACE_AGES, FAIRFACE_GENDERS, FAIRFACE_RACES
from facegen.data.factors import CONTINUOUS_FACTORS, FACTORS_NAME, INDEX_FACTORS
from facegen.data.synth_render import BEARD_FULL, BEARD_GOATEE, BEARD_NONE, render_face
from facegen.errors import FacegenError
from facegen.io import is_uri, staged_folder

LAYOUTS: tuple[str, ...] = ("celeba", "fairface")
_BASE_STREAM = 1  # third seed word of the identity generator, keeps it apart from the per-image ones
_PLAN_STREAM = 2**31  # second seed word of the split/identity planner (image indices stay below it)
# (size, face square (left, top, side)): CelebA's aligned centre crop is the 140x140 square at the centre.
CANVAS = {"celeba": ((178, 218), (19, 39, 140)), "fairface": ((224, 224), (36, 36, 152))}
IMAGE_DIR = {"celeba": "img_align_celeba", "fairface": ""}  # image path = join(out, dir, key)
JPEG_QUALITY = 90  # of the saved images
# Race (FAIRFACE_RACES order) -> skin tone band, face width, P(black, blond, brown hair). Each group is a
# cluster of its own tone band, tint (synth_render), width and hair palette, so race is learnable.
RACES = (
    ((0.76, 0.88), 0.93, (0.2, 0.5, 0.3)),  # White
    ((0.05, 0.18), 1.03, (1.0, 0.0, 0.0)),  # Black
    ((0.48, 0.55), 0.97, (0.5, 0.0, 0.5)),  # Latino_Hispanic
    ((0.66, 0.73), 1.09, (0.95, 0.0, 0.05)),  # East Asian
    ((0.38, 0.46), 1.0, (1.0, 0.0, 0.0)),  # Southeast Asian
    ((0.24, 0.34), 0.9, (0.9, 0.0, 0.1)),  # Indian
    ((0.57, 0.64), 0.86, (0.7, 0.0, 0.3)),  # Middle Eastern
)
PALE_TONE = (0.95, 1.0)  # skin tone band of Pale_Skin (White faces only)
# CelebA is mostly White adults; FairFace is race-balanced and spans all ages (FAIRFACE_AGES order).
_RACE_P = {"celeba": (0.4, 0.1, 0.1, 0.12, 0.08, 0.1, 0.1), "fairface": (1 / 7,) * 7}
_AGE_P = {"celeba": (0, 0, 0.2, 0.35, 0.15, 0.12, 0.08, 0.06, 0.04),
          "fairface": (0.04, 0.1, 0.12, 0.22, 0.18, 0.13, 0.1, 0.07, 0.04)}
_GRAY_P = (0.0, 0.0, 0.01, 0.03, 0.12, 0.3, 0.55, 0.8, 0.95)  # P(gray hair | age bin)
_GRAY = 3  # synth_render.HAIR_COLORS index


@dataclass(frozen=True)
class Face:
    """The labelled factors of one face (drawn by ``sample_face``, drawn on by ``render_face``): attrs maps
    each of ``factors.RENDERED_ATTRIBUTES`` to 0/1; race and age index FAIRFACE_RACES / FAIRFACE_AGES;
    hair_color indexes synth_render.HAIR_COLORS (all hair drawn, brows and beard too, so bald heads have one);
    beard is one of synth_render.BEARD_*."""

    attrs: dict[str, int]
    race: int
    age: int
    skin_tone: float  # 0 darkest .. 1 lightest
    face_shape: float  # head width multiplier
    hair_color: int
    curly: bool
    beard: int
    yaw: float  # -1 .. 1
    face_scale: float  # 0.85 .. 1.15
    lighting: float  # strength of the brightness gradient, 0 .. 0.3
    lighting_angle: float  # its direction in turns, 0 .. 1
    background_hue: float
    service_test: bool


class Task(NamedTuple):
    index: int  # global image index: the per-image seed word
    base_key: int  # identity seed word (the image index where there are no identities)
    identity: int  # CelebA identity, -1 for FairFace
    split: str
    key: str  # record key: "000001.jpg" or "train/1.jpg"


def sample_face(seed: int, index: int, base_key: int, layout: str) -> tuple[Face, np.random.Generator]:
    """Draw one face's factors; returns the face and its generator (rendering draws its nuisance from it)."""
    b = np.random.default_rng([seed, base_key, _BASE_STREAM])
    male = int(b.random() < 0.5)
    race = int(b.choice(7, p=_RACE_P[layout]))
    band, width, hair_p = RACES[race]
    pale = int(race == 0 and b.random() < 0.55)
    tone = b.uniform(*(PALE_TONE if pale else band))
    shape = width + 0.015 * b.standard_normal()
    age = int(b.choice(9, p=_AGE_P[layout]))
    hair = _GRAY if b.random() < _GRAY_P[age] else int(b.choice(3, p=hair_p))
    bald = int(male and age >= 3 and b.random() < (0.25 if age <= 3 else 0.5))

    r = np.random.default_rng([seed, index])
    man = male and age >= 3  # facial hair only on adult men
    beard = int(r.choice(3, p=(0.3, 0.45, 0.25))) if man else BEARD_NONE
    has_hair = not bald
    attrs = {
        "Male": male, "Bald": bald, "Pale_Skin": pale, "Young": int(age <= 3),
        "Black_Hair": int(has_hair and hair == 0), "Blond_Hair": int(has_hair and hair == 1),
        "Brown_Hair": int(has_hair and hair == 2), "Gray_Hair": int(has_hair and hair == _GRAY),
        "Smiling": int(r.random() < 0.5), "Mouth_Slightly_Open": int(r.random() < 0.45),
        "Eyeglasses": int(r.random() < 0.3), "Wearing_Hat": int(r.random() < 0.25),
        "Bangs": int(has_hair and r.random() < 0.35), "Narrow_Eyes": int(r.random() < 0.25),
        "Rosy_Cheeks": int(r.random() < (0.15 if male else 0.35)),
        "Wearing_Lipstick": int(age >= 2 and r.random() < (0.03 if male else 0.6)),
        "Goatee": int(beard == BEARD_GOATEE), "No_Beard": int(beard == BEARD_NONE),
        "Mustache": int(man and r.random() < 0.6), "Sideburns": int(man and has_hair and r.random() < 0.75),
        "5_o_Clock_Shadow": int(man and beard != BEARD_FULL and r.random() < 0.65),
    }
    face = Face(attrs=attrs, race=race, age=age, skin_tone=float(tone), face_shape=float(shape),
                hair_color=hair, curly=race == 1, beard=beard, yaw=r.uniform(-1, 1),
                face_scale=r.uniform(0.85, 1.15), lighting=r.uniform(0, 0.3), lighting_angle=r.random(),
                background_hue=r.random(), service_test=bool(r.random() < 0.5))
    return face, r


def plan(n: int, seed: int, layout: str) -> list[Task]:
    """File names, splits and identities of all n images (cheap, done once in the parent)."""
    if layout == "fairface":
        n_train = round(0.85 * n)
        return [Task(i, i, -1, "train", f"train/{i + 1}.jpg") if i < n_train else
                Task(i, i, -1, "val", f"val/{i - n_train + 1}.jpg") for i in range(n)]
    counts = {"val": round(0.1 * n), "test": round(0.1 * n)}
    counts = {"train": n - counts["val"] - counts["test"], **counts}
    digits = max(6, len(str(n)))
    tasks, first_id, i = [], 1, 0
    for code, split in enumerate(("train", "val", "test")):
        # Each split has its own pool of identities (as in the real CelebA split), about 5 images each.
        n_ids = max(1, counts[split] // 5)
        order = np.random.default_rng([seed, _PLAN_STREAM, code]).permutation(counts[split]) % n_ids
        for ident in order.tolist():
            name, person = f"{i + 1:0{digits}d}.jpg", first_id + ident
            tasks.append(Task(i, person, person, split, name))
            i += 1
        first_id += n_ids
    return tasks


def _render_chunk(job: tuple[str, int, str, list[Task]]) -> list[Face]:
    """Worker: render and save one chunk of images, return their factors in task order."""
    root, seed, layout, tasks = job
    folder, faces = os.path.join(root, IMAGE_DIR[layout]), []
    for t in tasks:
        face, rng = sample_face(seed, t.index, t.base_key, layout)
        render_face(face, rng, *CANVAS[layout]).save(os.path.join(folder, t.key), quality=JPEG_QUALITY)
        faces.append(face)
    return faces


def _render_all(root: str, seed: int, layout: str, tasks: list[Task], workers: int,
                progress: bool) -> list[Face]:
    """Render all tasks in ordered chunks, in this process or a pool; returns the faces in task order."""
    chunk = max(1, min(64, -(-len(tasks) // (4 * workers))))  # small runs still spread over all workers
    jobs = [(root, seed, layout, tasks[i:i + chunk]) for i in range(0, len(tasks), chunk)]
    faces: list[Face] = []
    # spawn, not fork: the CLI process may hold torch/Ray threads that fork would copy mid-lock.
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else nullcontext()
    with tqdm(total=len(tasks), unit="img", desc=f"synth {layout}", disable=not progress) as bar, pool:
        for part in pool.imap(_render_chunk, jobs) if workers > 1 else map(_render_chunk, jobs):
            faces.extend(part)
            bar.update(len(part))
    return faces


def _write_text(path: str, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(lines) + "\n")


def _write_labels(root: str, layout: str, tasks: list[Task], faces: list[Face]) -> list[str]:
    """Write the layout's label files; returns their names."""
    if layout == "celeba":
        # Same style as the real file: count, names, then each value right-aligned in 3 columns.
        rows = [t.key + "".join(f"{1 if f.attrs.get(a, 0) else -1:>3}" for a in CELEBA_ATTRIBUTES)
                for t, f in zip(tasks, faces)]
        _write_text(os.path.join(root, "list_attr_celeba.txt"),
                    [str(len(tasks)), " ".join(CELEBA_ATTRIBUTES) + " "] + rows)
        codes = {"train": 0, "val": 1, "test": 2}
        _write_text(os.path.join(root, "list_eval_partition.txt"), [f"{t.key} {codes[t.split]}" for t in tasks])
        _write_text(os.path.join(root, "identity_CelebA.txt"), [f"{t.key} {t.identity}" for t in tasks])
        return ["list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt"]
    names = []
    for split in ("train", "val"):
        rows = [f"{t.key},{FAIRFACE_AGES[f.age]},{FAIRFACE_GENDERS[1 - f.attrs['Male']]},"
                f"{FAIRFACE_RACES[f.race]},{f.service_test}"
                for t, f in zip(tasks, faces) if t.split == split]
        names.append(f"fairface_label_{split}.csv")
        _write_text(os.path.join(root, names[-1]), ["file,age,gender,race,service_test"] + rows)
    return names


def _factor_table(tasks: list[Task], faces: list[Face]) -> pa.Table:
    """factors.parquet: one row per image, in file order."""
    cols: dict[str, pa.Array] = {"key": pa.array([t.key for t in tasks], pa.string()),
                                 "split": pa.array([t.split for t in tasks], pa.string()),
                                 "identity": pa.array([t.identity for t in tasks], pa.int32())}
    for a in CELEBA_ATTRIBUTES:
        cols[a] = pa.array([f.attrs.get(a, 0) for f in faces], pa.int8())
    for name in CONTINUOUS_FACTORS:
        cols[name] = pa.array([getattr(f, name) for f in faces], pa.float32())
    for name in INDEX_FACTORS:  # indices, see Face
        cols[name] = pa.array([getattr(f, name) for f in faces], pa.int8())
    cols["gender"] = pa.array([1 - f.attrs["Male"] for f in faces], pa.int8())  # FAIRFACE_GENDERS index
    return pa.table(cols)


def _check_args(out: str, n: int, seed: int, layout: str, workers: int | None) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise FacegenError(f"synth: --n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FacegenError(f"synth: --seed must be a non-negative integer, got {seed!r}")
    if layout not in LAYOUTS:
        raise FacegenError(f"synth: unknown --layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise FacegenError(f"synth: --workers must be a positive integer, got {workers!r}")
    if not out or is_uri(out):
        raise FacegenError(f"synth: --out must be a local folder path, got {out!r}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise FacegenError(f"synth: --out {out} exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out):
        raise FacegenError(f"synth: --out {out} already exists and is not empty; "
                           "delete it or pick a new folder")


def write_synthetic(out: str, n: int, seed: int = 0, layout: str = "celeba", workers: int | None = None,
                    progress: bool = True) -> dict:
    """Render n synthetic faces into a new folder ``out`` in the given layout; returns a summary dict.
    Raises FacegenError for bad arguments or an existing non-empty ``out``."""
    _check_args(out, n, seed, layout, workers)
    workers = workers or min(2, os.cpu_count() or 1)
    out = os.path.normpath(out)
    tasks = plan(n, seed, layout)
    with staged_folder(out) as tmp:  # replaces an empty ``out`` (checked above)
        for folder in sorted({os.path.dirname(t.key) for t in tasks}):
            os.makedirs(os.path.join(tmp, IMAGE_DIR[layout], folder), exist_ok=True)
        faces = _render_all(tmp, seed, layout, tasks, workers, progress)
        labels = _write_labels(tmp, layout, tasks, faces)
        pq.write_table(_factor_table(tasks, faces), os.path.join(tmp, FACTORS_NAME))
    splits = {s: sum(t.split == s for t in tasks) for s in ("train", "val", "test")}
    return {"out": out, "layout": layout, "n": n, "seed": seed, "factors": os.path.join(out, FACTORS_NAME),
            "splits": {s: c for s, c in splits.items() if c or layout == "celeba"},
            "identities": len({t.identity for t in tasks}) if layout == "celeba" else 0,
            "labels": [os.path.join(out, name) for name in labels]}


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``facegen synth`` flags to ``parser``."""
    parser.add_argument("--out", required=True,
                        help="new local folder to write the dataset into (must not exist or be empty)")
    parser.add_argument("--n", type=int, default=2000, help="number of images to render (default: 2000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed: the same seed, n and layout give the same bytes (default: 0)")
    parser.add_argument("--layout", choices=LAYOUTS, default="celeba",
                        help="on-disk layout: 'celeba' (img_align_celeba/ + list_attr_celeba.txt ...) or "
                             "'fairface' (train/ val/ + fairface_label_*.csv) (default: celeba)")
    parser.add_argument("--workers", type=int, default=None,
                        help="rendering processes (default: min(2, CPU count)); does not change the output")
    parser.add_argument("--no-progress", action="store_true", help="don't draw a progress bar (logs, scripts)")
    from facegen.data.counterfactual import add_counterfactual_arguments  # it imports synth
    add_counterfactual_arguments(parser)


def run_synth(args: argparse.Namespace) -> int:
    """CLI entry: write the dataset (or with --counterfactuals its test sets); print a one-line summary."""
    if args.counterfactuals is not None or args.attributes is not None or args.resolution is not None:
        from facegen.data.counterfactual import run_counterfactuals
        return run_counterfactuals(args)
    s = write_synthetic(args.out, args.n, seed=args.seed, layout=args.layout, workers=args.workers,
                        progress=not args.no_progress)
    splits = ", ".join(f"{k} {v}" for k, v in s["splits"].items())
    print(f"wrote {s['n']} synthetic {s['layout']} faces to {s['out']} ({splits})")
    return 0
