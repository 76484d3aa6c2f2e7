"""``facegen prepare``: read a CelebA, FairFace or MNIST folder/URI (or the bundled digits) and write
Parquet shards + manifest.

The CLI (``facegen/cli.py``) and the Ray job (``jobs/prepare_data.py``) both call
:func:`add_prepare_arguments` then :func:`run_prepare`. No Ray here: preparation is a single-machine step
whose output Ray Data then reads from anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from facegen.align import ALIGN_CROP
from facegen.data.celeba import read_celeba
from facegen.data.digits import read_digits, read_mnist
from facegen.data.fairface import read_fairface
from facegen.data.image_format import DEFAULT_IMAGE_FORMAT, IMAGE_FORMATS
from facegen.data.shards import write_shards
from facegen.errors import FacegenError

READERS = {"celeba": read_celeba, "fairface": read_fairface, "mnist": read_mnist}
BUNDLED = {"digits": read_digits}  # shipped inside a dependency (scikit-learn): no --src
DEFAULT_RESOLUTION = {"digits": 32, "mnist": 32}  # any other dataset: 64
DIGITS = ("digits", "mnist")  # no faces to align


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``prepare`` options to ``parser`` (a subcommand parser or a standalone one)."""
    parser.description = (
        "Validate a CelebA, FairFace or MNIST dataset (or take scikit-learn's bundled digits) and write it as "
        "Parquet shards (OUT/<split>/part-NNNNN.parquet) plus OUT/manifest.json. Re-running with the same "
        "source and options does nothing.")
    parser.add_argument("--dataset", required=True, choices=sorted({*READERS, *BUNDLED}),
                        help="layout of --src: 'celeba' (list_attr_celeba.txt/.csv, list_eval_partition, "
                             "img_align_celeba/), 'fairface' (fairface_label_{train,val}.csv + images; its "
                             "val set is halved into val and test by a hash of the file name), 'mnist' "
                             "(train-/t10k- images-idx3-ubyte, labels-idx1-ubyte, optionally .gz); or "
                             "'digits': scikit-learn's 1797 8x8 digits, no --src needed")
    parser.add_argument("--src", metavar="DIR_OR_URI",
                        help="dataset folder or URI (s3://bucket/prefix, gs://..., file://...); S3 endpoint "
                             "and credentials come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...; required "
                             "except for --dataset digits")
    parser.add_argument("--out", required=True, metavar="DIR_OR_URI", help="where to write shards and manifest")
    parser.add_argument("--resolution", type=_positive, default=None, metavar="PX",
                        help="side of the square images stored in the shards (default: 32 for digits and "
                             "mnist, 64 otherwise)")
    parser.add_argument("--balance", default="", metavar="ATTR[,ATTR]",
                        help="re-assign splits so every split has the same joint distribution of these "
                             "attributes (CelebA names like Smiling,Male or race/age/gender); identities never "
                             "span splits (default: keep the dataset's own splits)")
    parser.add_argument("--rows-per-shard", type=_positive, default=2000, metavar="N",
                        help="rows per Parquet file (default: 2000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the train shuffle and of --balance (default: 0)")
    parser.add_argument("--workers", type=_positive, default=None, metavar="N",
                        help="image decoding processes (default: min(2, CPUs))")
    parser.add_argument("--strict", action="store_true",
                        help="abort on the first image that cannot be decoded (default: leave it out with a "
                             "warning line and list it under 'skipped' in the manifest)")
    parser.add_argument("--align", action="store_true",
                        help="the images are raw photos (not aligned crops): find each face (OpenCV's Haar "
                             "cascades) and frame it like CelebA's aligned crops, eyes level at a fixed height "
                             "and spacing; a photo without a detectable face is skipped like an undecodable one")
    parser.add_argument("--image-format", choices=IMAGE_FORMATS, default=DEFAULT_IMAGE_FORMAT,
                        help="how rows store a face: 'raw', the R*R*3 bytes of its pixels (training reads them "
                             "with no decoding; 1.8x PNG's bytes on the demo's synthetic faces), or 'png' "
                             f"(lossless, smaller, decoded every epoch) (default: {DEFAULT_IMAGE_FORMAT})")
    parser.add_argument("--no-progress", action="store_true", help="don't draw a progress bar")


def run_prepare(args: argparse.Namespace) -> int:
    """Run ``prepare`` with parsed ``args``; print a one-line summary and return 0.

    An undecodable image is skipped (one ``warning:`` line each, counted in the summary) unless
    ``--strict``. A user error (bad dataset, unreachable location, a missing image, an undecodable one with
    ``--strict``) prints ``error: <one line>`` to stderr and returns 2.
    """
    balance = [name.strip() for name in args.balance.split(",") if name.strip()]
    resolution = args.resolution or DEFAULT_RESOLUTION.get(args.dataset, 64)
    try:
        if args.dataset in BUNDLED:
            source = BUNDLED[args.dataset]()
        elif not args.src:
            raise FacegenError(f"--src: required for --dataset {args.dataset}")
        else:
            source = READERS[args.dataset](args.src)
        if args.align and args.dataset in DIGITS:
            raise FacegenError(f"--align: {args.dataset} images are digits, not faces")
        if args.align:
            source = dataclasses.replace(source, crop=ALIGN_CROP)
        manifest = write_shards(source, args.out, resolution=resolution, rows_per_shard=args.rows_per_shard,
                                balance=balance, seed=args.seed, progress=not args.no_progress,
                                workers=args.workers, strict=args.strict, image_format=args.image_format)
    except (FacegenError, OSError) as exc:  # OSError: unreachable bucket, denied credentials, full disk
        message = " ".join(str(exc).split())  # pyarrow's S3 errors span lines; keep the promise of one
        print(f"error: {message}", file=sys.stderr)
        return 2
    rows = ", ".join(f"{split} {manifest.rows(split)}" for split in manifest.splits)
    action = "already up to date" if manifest.reused else "wrote"
    skipped = (f"; skipped {len(manifest.skipped)} undecodable image{'s' * (len(manifest.skipped) > 1)} "
               f"(listed in the manifest)" if manifest.skipped else "")
    print(f"prepare {args.dataset}: {action} {rows} rows at {resolution}px{skipped}; "
          f"manifest {manifest.root.rstrip('/')}/manifest.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m facegen.data.prepare --dataset ... --src ... --out ...``."""
    parser = argparse.ArgumentParser(prog="facegen prepare")
    add_prepare_arguments(parser)
    return run_prepare(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
