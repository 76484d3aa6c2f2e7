"""Ground-truth counterfactuals of the synthetic faces: the same face with one attribute changed.

:func:`counterfactual` renders a dataset face (``synth.sample_face``) with the same generator after
:func:`edit_face` changed its factors. The edit draws nothing and the renderer draws all its randomness first
and in a fixed order, so identity, pose, expression, lighting, background, colours and noise stay the
original's: only pixels where the attribute is drawn change, and a face's own value gives the original bytes.

Counterfactuals stay faces the sampler draws, changing the fewest other labels that needs; "adult man" is
Male at 20-29 or older. Asking for more raises :class:`NotRenderable`.

* Eyeglasses, Wearing_Hat, Smiling, Mouth_Slightly_Open, Narrow_Eyes, Rosy_Cheeks, Wearing_Lipstick (=1:
  age 10+), Mustache, 5_o_Clock_Shadow (=1: adult man without a full beard): that label only.
* Bangs, Sideburns (=1: adult man): =1 on a bald head brings its hair back (Bald 0, its colour label 1).
* Goatee=1 / 0: the beard becomes a goatee / none, so No_Beard 0 / 1; =1 needs an adult man.
* No_Beard=1: no beard (Goatee 0). No_Beard=0: a full beard (adult men), 5_o_Clock_Shadow 0 under it.
* Bald=1 (adult men): no hair, so Bangs, Sideburns and the hair colours 0 (brows keep their colour).
  Bald=0: the face's own hair colour shows (its label 1), without bangs.
* Black/Blond/Brown/Gray_Hair=1: that colour, the other three 0 (brows, beard, sideburns follow); a bald
  head gets hair (Bald 0). =0 on the face's colour: brown hair (black instead of brown).
* Male=1: the male drawing (wider head, square jaw, short hair), still beardless. Male=0: the female
  drawing; beard, Mustache, Sideburns, 5_o_Clock_Shadow and Bald 0; lipstick and cheeks stay.
* Young=1: age 20-29. Young=0: age 40-49 (wrinkles; a child also takes adult proportions).
* Pale_Skin=1 / 0: skin tone to the same quantile of the pale / the White band; White faces only.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from facegen import io as fsio
from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.data.celeba import read_celeba
from facegen.data.factors import FACTORS_NAME, RENDERED_ATTRIBUTES
from facegen.data.fairface import read_fairface
from facegen.data.synth import CANVAS, JPEG_QUALITY, LAYOUTS, PALE_TONE, RACES, Face, plan, sample_face
from facegen.data.synth_render import BEARD_FULL, BEARD_GOATEE, BEARD_NONE, render_face
from facegen.errors import DatasetError, FacegenError
from facegen.images import decode_face, encode_png

_ADULT_AGE, _LIPSTICK_AGE = 3, 2  # first age bins with facial hair and baldness (20-29), lipstick (10-19)
_YOUNG_AGE, _OLD_AGE = 3, 5  # Young=1 -> 20-29 (Young ends there), Young=0 -> 40-49 (crow's feet show)
_HAIR = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")  # synth_render.HAIR_COLORS order
_HAIR_INSTEAD = (2, 2, 0, 2)  # <Colour>_Hair=0: black, blond and gray hair turn brown, brown turns black
_FACIAL_HAIR = ("Mustache", "Sideburns", "5_o_Clock_Shadow")
_SCHEMA = pa.schema([
    ("key", pa.string()), ("identity", pa.int32()), ("attribute", pa.string()), ("target_value", pa.int8()),
    ("original", pa.binary()), ("counterfactual", pa.binary()), ("attrs_original", pa.list_(pa.int8())),
    ("attrs_counterfactual", pa.list_(pa.int8())), ("changed", pa.list_(pa.string())),
])


class NotRenderable(FacegenError):
    """The counterfactual asked for is not a face the sampler draws (a goatee on a woman, say)."""


@dataclass(frozen=True)
class SynthRef:
    """One image of a synthetic dataset: the seed words ``synth.sample_face`` draws it from, and its key."""

    seed: int
    layout: str
    index: int  # per-image seed word = its row in factors.parquet
    base_key: int  # identity seed word: the CelebA identity, or the index for FairFace
    key: str

    @classmethod
    def at(cls, seed: int, layout: str, n: int, index: int) -> SynthRef:
        """Image ``index`` (0-based, file order) of ``facegen synth --n n --seed seed --layout layout``."""
        if layout not in LAYOUTS or seed < 0 or not 0 <= index < n:
            raise FacegenError(f"no image {index} in a {layout!r} dataset of {n} with seed {seed}")
        task = plan(n, seed, layout)[index]
        return cls(seed, layout, task.index, task.base_key, task.key)

    @classmethod
    def from_row(cls, row: Mapping, seed: int, n: int) -> SynthRef:
        """The image of a factors.parquet ``row`` of a dataset of ``n`` images written with ``seed``; raises
        FacegenError when the row does not hold what ``seed`` draws for its key."""
        key, layout = str(row["key"]), "fairface" if "/" in str(row["key"]) else "celeba"
        task = next((t for t in plan(n, seed, layout) if t.key == key), None)
        if task is None:
            raise FacegenError(f"{key}: no such image in a {layout} dataset of {n}")
        ref = cls(seed, layout, task.index, task.base_key, key)
        _check_row(ref, row)
        return ref


@dataclass(frozen=True)
class Counterfactual:
    """A render (on the dataset's canvas, lossless), its 40 CelebA labels, factors and changed labels."""

    image: Image.Image
    attrs: dict[str, int]
    face: Face
    changed: tuple[str, ...]


def _check_target(attribute: str, value: int) -> None:
    if attribute not in RENDERED_ATTRIBUTES:
        raise FacegenError(f"unknown attribute {attribute!r}; rendered ones: {', '.join(RENDERED_ATTRIBUTES)}")
    if isinstance(value, bool) or value not in (0, 1):
        raise FacegenError(f"{attribute}: value must be 0 or 1, got {value!r}")


def edit_face(face: Face, attribute: str, value: int) -> Face:
    """``face`` with ``attribute`` set to ``value`` (0/1) as the module docstring describes; ``face`` itself
    when it already has that value. Raises NotRenderable for a face the sampler cannot draw."""
    _check_target(attribute, value)
    if face.attrs[attribute] == value:
        return face
    a, age, beard, hair, tone = dict(face.attrs), face.age, face.beard, face.hair_color, face.skin_tone
    man = a["Male"] and age >= _ADULT_AGE

    def need(ok: bool, why: str) -> None:
        if not ok:
            raise NotRenderable(f"{attribute}={value} is not renderable: {why}")

    a[attribute] = value
    if attribute == "Wearing_Lipstick":
        need(not value or age >= _LIPSTICK_AGE, "no lipstick under 10")
    elif attribute in _FACIAL_HAIR:
        need(not value or man, "facial hair is drawn on adult men only")
        need(not value or attribute != "5_o_Clock_Shadow" or beard != BEARD_FULL, "stubble under a full beard")
        a["Bald"] = 0 if attribute == "Sideburns" and value else a["Bald"]
    elif attribute == "Bangs":
        a["Bald"] = 0  # bangs need hair (Bangs=0: there was hair)
    elif attribute in ("Goatee", "No_Beard"):
        beard = ((BEARD_GOATEE if value else BEARD_NONE) if attribute == "Goatee"
                 else (BEARD_NONE if value else BEARD_FULL))
        need(beard == BEARD_NONE or man, "beards are drawn on adult men only")
        a["5_o_Clock_Shadow"] = 0 if beard == BEARD_FULL else a["5_o_Clock_Shadow"]
    elif attribute == "Bald":
        need(not value or man, "only adult men are bald")
        a.update({"Bangs": 0, "Sideburns": 0} if value else {})
    elif attribute in _HAIR:
        k = _HAIR.index(attribute)
        hair, a["Bald"] = (k if value else _HAIR_INSTEAD[k]), 0
    elif attribute == "Male" and not value:
        a.update({"Bald": 0, "Mustache": 0, "Sideburns": 0, "5_o_Clock_Shadow": 0})
        beard = BEARD_NONE
    elif attribute == "Young":
        age = _YOUNG_AGE if value else _OLD_AGE
    elif attribute == "Pale_Skin":
        need(face.race == 0, "pale skin is drawn on White faces only")
        (lo, hi), (to_lo, to_hi) = (RACES[0][0], PALE_TONE) if value else (PALE_TONE, RACES[0][0])
        tone = to_lo + (to_hi - to_lo) * (tone - lo) / (hi - lo)
    a.update({name: int(not a["Bald"] and hair == k) for k, name in enumerate(_HAIR)})  # labels of factors
    a.update(Goatee=int(beard == BEARD_GOATEE), No_Beard=int(beard == BEARD_NONE), Young=int(age <= _YOUNG_AGE))
    return replace(face, attrs=a, age=age, beard=beard, hair_color=hair, skin_tone=float(tone))


def counterfactual(ref: SynthRef, attribute: str | None = None, value: int = 1) -> Counterfactual:
    """Render image ``ref`` with ``attribute`` set to ``value`` (0/1), everything else unchanged (no
    ``attribute``: the original). Raises FacegenError for an unknown attribute or value, NotRenderable for
    a face the sampler does not draw."""
    face, rng = sample_face(ref.seed, ref.index, ref.base_key, ref.layout)
    edited = face if attribute is None else edit_face(face, attribute, value)
    return Counterfactual(render_face(edited, rng, *CANVAS[ref.layout]),
                          {a: int(edited.attrs.get(a, 0)) for a in CELEBA_ATTRIBUTES}, edited,
                          tuple(a for a in RENDERED_ATTRIBUTES if edited.attrs[a] != face.attrs[a]))


def training_png(image: Image.Image, crop: tuple, resolution: int) -> bytes:
    """What ``facegen prepare`` stores for ``image`` saved in a synth dataset: the JPEG file decoded, cut
    by ``facegen.images.preprocess`` (``crop``, ``resolution``) and PNG-encoded."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)  # as synth saves its files
    return encode_png(decode_face(buf.getvalue(), crop, resolution))


def _check_row(ref: SynthRef, row: Mapping) -> None:
    """Raise FacegenError unless ``row`` (of factors.parquet) holds what ``ref`` draws."""
    face = sample_face(ref.seed, ref.index, ref.base_key, ref.layout)[0]
    wrong = [a for a in RENDERED_ATTRIBUTES if a in row and int(row[a]) != face.attrs[a]]
    wrong += ["yaw"] if "yaw" in row and np.float32(row["yaw"]) != np.float32(face.yaw) else []
    if wrong:
        raise FacegenError(f"{ref.key}: {', '.join(wrong[:3])} differ from what seed {ref.seed} draws; pass the "
                           "seed the dataset was written with (facegen synth --seed)")


def _test_faces(dataset: str, seed: int) -> tuple[str, tuple, str, list[tuple[SynthRef, int]]]:
    """(layout, crop, dataset URI, [(ref, identity)] of its test faces in file order) of a synth folder."""
    root = (dataset[: -len(FACTORS_NAME)].rstrip("/") or ".") if dataset.endswith(FACTORS_NAME) else dataset
    fs, folder = fsio.resolve(root)
    path = fsio.join(folder, FACTORS_NAME)
    try:
        rows = pq.read_table(pa.BufferReader(fsio.read_bytes(fs, path))).to_pylist()
    except FileNotFoundError:
        raise DatasetError(f"{fsio.to_uri(fs, path)}: missing; is {root} a `facegen synth` folder?") from None
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{fsio.to_uri(fs, path)}: unreadable ({exc})") from None
    if not rows or not {"key", "identity"} <= rows[0].keys():
        raise DatasetError(f"{fsio.to_uri(fs, path)}: no rows with key and identity")
    layout = "fairface" if "/" in rows[0]["key"] else "celeba"
    source = (read_fairface if layout == "fairface" else read_celeba)(root)  # the test split prepare reads
    test = {r.key for r in source.records if r.split == "test"}
    faces = []
    for i, row in enumerate(rows):
        if row["key"] in test:
            ref = SynthRef(seed, layout, i, i if layout == "fairface" else int(row["identity"]), row["key"])
            _check_row(ref, row)
            faces.append((ref, int(row["identity"])))
    return layout, source.crop, fsio.to_uri(fs, folder), faces


def write_counterfactuals(dataset: str, out: str, attributes: Sequence[str] = RENDERED_ATTRIBUTES,
                          n: int | None = None, seed: int = 0, resolution: int = 64,
                          progress: bool = False) -> dict:
    """Write ``out/<attribute>.parquet`` (folder or URI, each file atomically) for each of ``attributes``: for
    the first ``n`` test faces (of ``facegen prepare``'s test split) of ``dataset``, a ``facegen synth`` folder
    written with ``seed`` (or its factors.parquet), the face and its counterfactual with the attribute's other
    value; faces where that is not renderable are skipped. Returns a summary. Columns (``_SCHEMA``): ``key``,
    ``identity``, ``attribute``, ``target_value``, ``original`` and ``counterfactual`` (PNGs as ``facegen
    prepare`` stores the dataset's JPEGs at ``resolution``: the original is byte-identical to its shard
    image), ``attrs_original``, ``attrs_counterfactual`` (40 0/1 in CELEBA_ATTRIBUTES order), ``changed``."""
    for name in attributes or [""]:  # none: complain about ""
        _check_target(name, 0)
    for name, value, low in (("n", 1 if n is None else n, 1), ("seed", seed, 0), ("resolution", resolution, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise FacegenError(f"counterfactuals: {name} must be an integer >= {low}, got {value!r}")
    layout, crop, source, faces = _test_faces(dataset, seed)
    fs, folder = fsio.resolve(out)
    if fsio.to_uri(fs, folder) == source:
        raise FacegenError(f"counterfactuals: --out {out} is the dataset folder; pick another one")
    meta = {"attribute_names": json.dumps(CELEBA_ATTRIBUTES), "layout": layout, "seed": str(seed),
            "resolution": str(resolution), "crop": json.dumps(list(crop))}  # no paths: same bytes anywhere
    originals: dict[int, tuple[bytes, dict[str, int]]] = {}  # index -> PNG and labels
    summary: dict = {"out": fsio.to_uri(fs, folder), "layout": layout, "test_faces": len(faces), "files": {},
                     "pairs": {}, "skipped": {}}
    for attribute in tqdm(attributes, unit="attr", desc="counterfactuals", disable=not progress):
        rows, skipped = [], 0
        for ref, identity in faces:
            if n is not None and len(rows) >= n:
                break
            if ref.index not in originals:
                orig = counterfactual(ref)
                originals[ref.index] = (training_png(orig.image, crop, resolution), orig.attrs)
            png, attrs = originals[ref.index]
            target = 1 - attrs[attribute]
            try:
                cf = counterfactual(ref, attribute, target)
            except NotRenderable:
                skipped += 1
                continue
            rows.append({"key": ref.key, "identity": identity, "attribute": attribute, "target_value": target,
                         "original": png, "counterfactual": training_png(cf.image, crop, resolution),
                         "attrs_original": list(attrs.values()),
                         "attrs_counterfactual": list(cf.attrs.values()), "changed": list(cf.changed)})
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows, schema=_SCHEMA.with_metadata(meta)), sink)
        path = fsio.join(folder, f"{attribute}.parquet")
        try:
            fsio.write_atomic(fs, path, sink.getvalue().to_pybytes())
        except OSError as exc:  # no such bucket, read-only folder...
            raise FacegenError(f"{fsio.to_uri(fs, path)}: cannot write ({exc})") from None
        summary["files"][attribute] = fsio.to_uri(fs, path)
        summary["pairs"][attribute], summary["skipped"][attribute] = len(rows), skipped
    return summary


def add_counterfactual_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``facegen synth --counterfactuals`` flags to ``parser`` (``synth.add_synth_arguments`` does)."""
    group = parser.add_argument_group("counterfactual test sets", (
        "With --counterfactuals DATASET, write --out/<attribute>.parquet (folder or URI) instead of a dataset: "
        "up to --n test faces of DATASET, each with the same face with that attribute flipped, as facegen "
        "prepare stores images, and both faces' labels. --seed must be DATASET's. Example: facegen synth "
        "--counterfactuals out/demo/synth-celeba --seed 0 --out out/cf64 --attributes Eyeglasses,Smiling"))
    group.add_argument("--counterfactuals", metavar="DATASET",
                       help="a folder written by facegen synth (or its factors.parquet)")
    group.add_argument("--attributes", metavar="ATTR[,ATTR]",
                       help=f"attributes to flip (default: all rendered ones: {', '.join(RENDERED_ATTRIBUTES)})")
    group.add_argument("--resolution", type=int, metavar="PX", help="side of the stored squares (default: 64)")


def run_counterfactuals(args: argparse.Namespace) -> int:
    """CLI entry of ``facegen synth --counterfactuals``: write the test sets, print a one-line summary."""
    if args.counterfactuals is None:
        raise FacegenError("synth: --attributes and --resolution go with --counterfactuals DATASET")
    names = RENDERED_ATTRIBUTES if args.attributes is None else [
        a.strip() for a in args.attributes.split(",") if a.strip()]
    s = write_counterfactuals(args.counterfactuals, args.out, names, n=args.n, seed=args.seed,
                              resolution=64 if args.resolution is None else args.resolution,
                              progress=not args.no_progress)
    print(f"wrote {sum(s['pairs'].values())} counterfactual pairs ({len(names)} attributes, {s['test_faces']} "
          f"test faces, {sum(s['skipped'].values())} flips not renderable) to {s['out']}")
    return 0
