"""``facegen augment`` / ``python jobs/augment.py``: edited variants of a folder of faces, made with Ray Data.

Driver: every check (bundle, attribute names, strengths, labels, output names) runs before Ray starts, so a
mistake costs no start-up time and writes nothing. Then the pipeline

    from_items(listed files) -> map_batches(read_sources)                   read bytes (tasks)
                             -> map_batches(EditVariants, ActorPoolStrategy) decode, edit, write PNGs (actors,
                                                                            each loads the bundle once)
                             -> rows back to the driver -> label files, then the manifest, written last.

What variant k applies and the manifest's rows: :mod:`facegen.augment.variants`; the CelebA layout and its
labels: :mod:`facegen.augment.celeba`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, replace

from facegen import io as fsio
from facegen.augment.celeba import SourceLabels, read_source_labels, write_celeba_labels
from facegen.augment.checks import (
    check_flip,
    check_model,
    condition_table,
    resolve_directions,
    training_batch,
    validate_edits,
)
from facegen.augment.flips import FLIP, flip_names
from facegen.augment.guided import check_guided, training_code_scale
from facegen.augment.variants import (
    LAYOUT_DIRS,
    MANIFEST_NAME,
    AugmentSpec,
    EditVariants,
    error_row,
    list_images,
    manifest_rows,
    parse_edits,
    read_sources,
    write_manifest,
)
from facegen.bundle import load_bundle
from facegen.data import celeba, fairface
from facegen.errors import FacegenError
from facegen.latent.conditions import ConditionTable
from facegen.latent.directions import Directions
from facegen.latent.edit import EDIT_METHODS
from facegen.latent.guided import GUIDED, guide_from_bundle
from facegen.runtime import Demand, init_ray, require_resources

READ_CPUS = 0.25  # one task reading source images, beside the actor pool
VARIANTS_HELP = ("variant k (1..K) moves each direction edit by strength * k/K (a ladder up to the full "
                 "strength), times 1 + J*u with u uniform in [-1, 1] drawn once per (seed, k, attribute) when "
                 "--jitter J > 0, so every image's k-th variant gets the same, recorded edit; a latent-slot "
                 "edit (a CVAE attribute entry, an InfoGAN code) is set as given in every variant")


def _pair(text: str) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (e.g. 1,2), got {text!r}") from None
    if not 1 <= low <= high:
        raise argparse.ArgumentTypeError(f"need 1 <= MIN <= MAX, got {text!r}")
    return low, high


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def add_augment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Write K edited variants of every .jpg/.png under --images (recursively) to "
                          "OUT/images/<stem>__v<k>.png at the model's resolution, plus OUT/manifest.jsonl "
                          "(one row per variant; an unreadable image gets an error row and the rest go on). "
                          + VARIANTS_HELP + ".")
    parser.add_argument("--bundle", required=True, help="model bundle folder or URI (a latent model: VAE, AE, ...)")
    parser.add_argument("--images", required=True, metavar="DIR_OR_URI", help="folder of source images")
    parser.add_argument("--out", required=True, metavar="DIR_OR_URI", help="where variants and manifest go")
    parser.add_argument("--edits", default=None, metavar="ATTR:S[,ATTR:S]",
                        help="edits and full strengths, e.g. 'Smiling:+1,Eyeglasses:+1' (directions: standard "
                             "deviations of the codes, |S| <= 10; slots: the value to set)")
    parser.add_argument("--flip", default=None, metavar="all|ATTR[,ATTR]",
                        help="instead of --edits, for a model conditioned on attributes (a CVAE): variant k of a "
                             "source flips one of these attribute slots (a per-source shuffle, drawn by --seed) to "
                             "the opposite of the source's label; slots it rules on move to a combination training "
                             "faces have, and the variant is labelled by its whole new condition (needs --labels)")
    parser.add_argument("--slot-push", type=float, default=0.0, metavar="P",
                        help="with --flip: set the flipped entry P past 0/1 (1+P, -P; <= 1), which exaggerates it")
    parser.add_argument("--variants", type=_positive, default=2, metavar="K", help="variants per image (default 2)")
    parser.add_argument("--method", choices=(*EDIT_METHODS, GUIDED), default="mean_diff",
                        help="direction method; 'conditional' holds the --keep attributes fixed; 'guided' steps "
                             "each face until --guide reads the target (the strength's sign), at most |S|*k/K "
                             "std far (default mean_diff)")
    parser.add_argument("--guide", default=None, metavar="CLASSIFIER_BUNDLE",
                        help="attribute classifier for --method guided and --relabel; not the classifier that "
                             "will judge the augmented data")
    parser.add_argument("--residual", action="store_true",
                        help="write source + (edited decode - reconstruction): the edit's change on the source's "
                             "own pixels, so variants are not blurrier than the originals")
    parser.add_argument("--relabel", action="store_true",
                        help="label variants by the guide, not the edit's sign: an edited attribute gets its "
                             "target only where the guide reads it, another one the guide's reading where that "
                             "crossed 0.5 since the reconstruction; the rest keep the source's (needs --guide)")
    parser.add_argument("--keep", default="", metavar="A,B", help="attributes held fixed (--method conditional)")
    parser.add_argument("--jitter", type=float, default=0.0, metavar="J",
                        help="random relative spread of the variants' strengths, in [0, 1) (default 0)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the --jitter draws and --flip shuffles (default 0)")
    parser.add_argument("--layout", choices=sorted(LAYOUT_DIRS), default="images",
                        help="'celeba': OUT is a CelebA folder (img_align_celeba/, list_attr_celeba.txt, "
                             "list_eval_partition.txt) ready for facegen prepare; needs --labels")
    parser.add_argument("--labels", default=None, metavar="LIST_ATTR",
                        help="the sources' list_attr_celeba.txt (or .csv); with a list_eval_partition file beside "
                             "it only train-split images are edited (editing val/test faces would leak them)")
    parser.add_argument("--with-sources", action="store_true",
                        help="also write each source unedited as variant 0 (<stem>.png), in its own split")
    parser.add_argument("--crop", default="auto", metavar="auto|full|PX",
                        help="face square taken from a source before resizing: 'auto' = the bundle dataset's "
                             "(CelebA: centre 140 px), 'full' = largest centred square, or a side in pixels")
    parser.add_argument("--fit-rows", type=_positive, default=2000, metavar="N",
                        help="training rows to fit directions on when the bundle stores none (default 2000)")
    parser.add_argument("--batch-size", type=_positive, default=32, metavar="N", help="images per actor call")
    parser.add_argument("--actors", type=_pair, default=(1, 2), metavar="MIN,MAX", help="actor pool size (default 1,2)")
    parser.add_argument("--cpus-per-actor", type=float, default=0.5, metavar="C", help="CPUs each actor reserves")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs for a local Ray started by this command (ignored when joining a cluster)")


@dataclass
class AugmentJob:
    """Everything the pipeline needs, checked. items: one dict per image sent to Ray (rel, source, edit[,
    attrs]); rows: manifest rows decided on the driver (unlabelled images); source_keys: source -> label name."""

    bundle: str
    images: str
    out: str
    spec: AugmentSpec
    directions: Directions | None
    items: list[dict]
    rows: list[dict] = field(default_factory=list)
    labels: SourceLabels | None = None
    source_keys: dict[str, str] = field(default_factory=dict)
    skipped: int = 0
    guide: str | None = None
    scale: object = None  # (D,) tensor: the unit of a guided step (--method guided), else None
    conditions: ConditionTable | None = None  # --flip: the condition combinations training faces have


def _crop(text: str, dataset: str) -> tuple:
    if text == "auto":
        return {"celeba": celeba.CROP, "fairface": fairface.CROP}.get(dataset, ("full",))
    if text == "full":
        return ("full",)
    if not text.isdigit() or int(text) < 1:
        raise FacegenError(f"--crop: expected auto, full or a side in pixels, got {text!r}")
    return ("center", int(text))


def plan_job(args: argparse.Namespace) -> AugmentJob:
    """Check everything and list the work; no Ray. Raises FacegenError naming the first problem."""

    images = list_images(args.images)
    fs, root = fsio.resolve(args.images)
    out_fs, out_root = fsio.resolve(args.out)
    if out_fs.type_name == fs.type_name and (out_root + "/").startswith(root + "/"):
        raise FacegenError(f"--out {args.out} is inside --images {args.images}: a rerun would edit the outputs")
    if (args.edits is None) == (args.flip is None):
        raise FacegenError("give one of --edits ATTR:S[,...] or --flip all|ATTR[,...]")
    edits = parse_edits(args.edits) if args.edits is not None else {}
    bundle = load_bundle(args.bundle)
    keep = tuple(k.strip() for k in args.keep.split(",") if k.strip())
    labels = None
    if args.labels:
        labels = read_source_labels(args.labels)
    flip = flip_names(args.flip, bundle.model) if args.flip is not None else ()
    if flip:
        check_flip(args)
    slots = check_model(bundle, args.bundle, args.layout, {**edits, **dict.fromkeys(flip, 1.0)}, labels)
    guided = args.method == GUIDED
    if (guided or args.relabel) != bool(args.guide):
        raise FacegenError("--guide goes with --method guided or --relabel" if args.guide
                           else f"--{'method guided' if guided else 'relabel'} needs --guide CLASSIFIER_BUNDLE")
    if guided and keep:
        raise FacegenError("--keep only applies to --method conditional (a guided edit holds every attribute "
                           "the guide reads)")
    if args.guide:
        check_guided(guide_from_bundle(args.guide), edits, slots, args.method)
    directions = None if guided else resolve_directions(bundle, edits, keep, args.method, slots, args.fit_rows,
                                                        args.bundle)
    spec = AugmentSpec(edits=edits, variants=args.variants, method=args.method, keep=keep,
                       jitter=args.jitter, seed=args.seed, crop=_crop(args.crop, bundle.meta.get("dataset", "")),
                       layout=args.layout, with_sources=args.with_sources, fixed=frozenset(edits) & set(slots),
                       relabel=args.relabel, residual=args.residual, flip=flip, slot_push=args.slot_push)
    scale = conditions = None
    if guided:
        _, batch = training_batch(bundle, args.fit_rows, f"--method guided: {args.bundle}:", "size its steps")
        scale = training_code_scale(bundle.model, batch)
    elif flip:
        spec = replace(spec, method=FLIP)
        conditions = condition_table(bundle, args.fit_rows, args.bundle)
    else:
        validate_edits(bundle.model, spec, directions)
    job = AugmentJob(bundle=args.bundle, images=args.images, out=args.out, spec=spec, directions=directions,
                     items=[], labels=labels, guide=args.guide, scale=scale, conditions=conditions)
    _add_items(job, images, needs_attrs=bundle.model.condition_part() is not None)
    return job


def _add_items(job: AugmentJob, images: list[str], needs_attrs: bool) -> None:
    """One work item per listed image; unlabelled images become error rows, val/test ones are only copied
    (``--with-sources``) or left out. Output names that would collide are refused."""

    fs, root = fsio.resolve(job.images)
    spec, labels, seen = job.spec, job.labels, {}
    for rel in images:
        source = fsio.to_uri(fs, fsio.join(root, rel))
        first = spec.output_name(rel, 1)
        if first in seen:
            raise FacegenError(f"{seen[first]} and {rel} would both be written as {first}; rename one")
        seen[first] = rel
        if spec.layout == "celeba" and any(c.isspace() for c in rel):
            raise FacegenError(f"{source}: a CelebA label file cannot name a file with spaces; rename it")
        item = {"rel": rel, "source": source, "edit": True}
        if labels is not None:
            key = labels.key_of(rel)
            if key is None:
                job.rows.append(error_row(source, spec.method, f"{source}: no labels in {labels.location}"))
                continue
            job.source_keys[source] = key
            item["edit"] = labels.splits is None or labels.splits.get(key, "train") == "train"
            if needs_attrs:
                item["attrs"] = labels.celeba_vector(key)
        if not item["edit"] and not spec.with_sources:
            job.skipped += 1
            continue
        job.items.append(item)


def run_pipeline(job: AugmentJob, batch_size: int, actors: tuple[int, int], cpus_per_actor: float) -> list[dict]:
    """Run the Ray Data pipeline (Ray must be initialised); returns the rows it produced."""
    import ray.data
    from ray.data.context import DataContext


    if not job.items:
        return []
    DataContext.get_current().enable_progress_bars = sys.stderr.isatty()  # bars for a person, not for logs
    ds = ray.data.from_items(job.items)
    ds = ds.map_batches(read_sources, batch_format="pyarrow", batch_size=batch_size, num_cpus=READ_CPUS,
                        fn_kwargs={"root": job.images})
    ds = ds.map_batches(EditVariants, batch_format="pyarrow", batch_size=batch_size, num_cpus=cpus_per_actor,
                        compute=ray.data.ActorPoolStrategy(min_size=actors[0], max_size=actors[1]),
                        fn_constructor_kwargs={"bundle": job.bundle, "out": job.out, "spec": job.spec,
                                               "directions": job.directions, "guide": job.guide,
                                               "scale": job.scale, "conditions": job.conditions})
    return list(ds.iter_rows())


def finish(job: AugmentJob, produced: list[dict]) -> int:
    """Label files (CelebA layout), then the manifest, last; a summary on stdout and errors on stderr."""

    rows = manifest_rows(job.rows + produced)
    written = [r for r in rows if r["output"] is not None]
    if job.spec.layout == "celeba":
        write_celeba_labels(job.out, rows, job.labels, job.source_keys, job.spec.fixed)
    manifest = write_manifest(job.out, rows)
    errors = [r["error"] for r in rows if r["error"] is not None]
    sources = len({r["source"] for r in rows}) + job.skipped
    variants = sum(1 for r in written if r["variant"])
    print(f"augment: wrote {variants} variants of {len({r['source'] for r in written if r['variant']})} images "
          f"to {job.out} (manifest {manifest})" + (f"; {job.skipped} val/test images left out" if job.skipped else ""))
    for message in errors:
        print(message, file=sys.stderr)
    if errors:
        print(f"augment: {len(errors)} of {sources} images could not be used (error rows in {manifest})",
              file=sys.stderr)
    if not written:
        raise FacegenError(f"no image under {job.images} could be augmented (see {manifest})")
    return 0


def run_augment(args: argparse.Namespace) -> int:
    job = plan_job(args)
    fs, root = fsio.resolve(args.out)
    stale = fsio.join(root, MANIFEST_NAME)
    if fsio.exists(fs, stale):  # an old manifest would describe files this run is about to replace
        fs.delete_file(stale)
    init_ray(args.num_cpus)
    low, cpus = args.actors[0], args.cpus_per_actor  # the pool starts its minimum before any image moves
    require_resources(Demand("augment", [{"CPU": cpus}] * low, reserve={"CPU": READ_CPUS},
                             why={"CPU": f"--actors minimum {low} x --cpus-per-actor {cpus:g} + {READ_CPUS:g} "
                                         f"for reading the images"}))
    produced = run_pipeline(job, args.batch_size, args.actors, args.cpus_per_actor)
    return finish(job, produced)
