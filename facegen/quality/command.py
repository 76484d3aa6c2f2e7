"""``facegen evaluate``'s command line: its options and the run that checks them and calls
:func:`facegen.quality.benchmark.evaluate`."""

from __future__ import annotations

import argparse

from facegen import io as fsio
from facegen.errors import FacegenError
from facegen.latent.edit import MAX_SLOT_PUSH
from facegen.quality.benchmark import Settings, evaluate


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--bundles", metavar="B1,B2,...", help="comma-separated model bundle folders or URIs")
    which.add_argument("--runs", metavar="RUN_FOLDER", help="evaluate every bundle under this folder")
    parser.add_argument("--judge", required=True, metavar="BUNDLE",
                        help="an attribute classifier bundle (family classifier) that no model trained against "
                             "(e.g. one trained with configs/judge_synth64.yaml)")
    parser.add_argument("--shards", default=None, help="held-out data (default: each bundle's data.shards)")
    parser.add_argument("--counterfactuals", default=None, metavar="DIR",
                        help="counterfactual sets (facegen synth --counterfactuals) for the editing section "
                             "(default: SHARDS/counterfactuals, SHARDS/../counterfactuals or SHARDS/../cf<px>)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_FOLDER/quality, or out/quality)")
    parser.add_argument("--n", type=_positive, default=512,
                        help="test images, samples and training images (default 512)")
    parser.add_argument("--fit-n", type=_positive, default=4000,
                        help="training images whose codes an autoencoder's ex-post density is fitted on, and "
                             "whose labels give a conditional model the conditions its slot edits land on "
                             "(default 4000)")
    parser.add_argument("--edit-n", type=_positive, default=64, help="counterfactual pairs per attribute (default 64)")
    parser.add_argument("--attributes", default=None, metavar="A,B",
                        help="attributes to judge and edit (default: every one the judge knows that varies in the "
                             "test labels)")
    parser.add_argument("--guide", default=None, metavar="BUNDLE",
                        help="an attribute classifier bundle (not the judge) that steers a 'guided' edit method "
                             "in the editing section: gradient steps on each code until the guide reads the target")
    parser.add_argument("--residual", action="store_true",
                        help="also score every edit method composed in pixels ('<method>+residual': the original "
                             "plus what the edit changed in the decode; guided ones steered on that picture)")
    parser.add_argument("--read-conditions", action="store_true",
                        help="a conditional model's encoder gets each original's attributes as --guide reads them "
                             "(what the service does with an upload), not the true labels")
    parser.add_argument("--slot-push", type=float, default=0.0, metavar="P",
                        help="slot edits (a conditional model's condition entries) set the edited entry P past "
                             "the target value: 1+P to turn an attribute on, -P to turn it off (default 0: "
                             f"exactly 1 or 0; at most {MAX_SLOT_PUSH:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    parser.add_argument("--fresh", action="store_true",
                        help="evaluate every bundle again (default: a bundle whose stored result in OUT was "
                             "computed from the same bundle files, judge, guide, data and settings is reused, so "
                             "an interrupted evaluation resumes)")


def run_evaluate(args: argparse.Namespace) -> int:
    if args.n < 2:
        raise FacegenError("--n: the Fréchet distance needs at least 2 images")
    if args.runs:
        from facegen.reporting.report import find_bundles  # deferred: report.py imports pipeline (Ray Data)

        locations = find_bundles(args.runs)
        if not locations:
            raise FacegenError(f"{args.runs}: no model bundles found (a bundle folder holds meta.json and weights.pt)")
    else:
        locations = [b.strip() for b in args.bundles.split(",") if b.strip()]
        if not locations:
            raise FacegenError("--bundles: give at least one bundle")
    out = args.out or (fsio.join(args.runs.rstrip("/"), "quality") if args.runs else "out/quality")
    attributes = tuple(a.strip() for a in args.attributes.split(",") if a.strip()) if args.attributes else None
    if not 0 <= args.slot_push <= MAX_SLOT_PUSH:
        raise FacegenError(f"--slot-push: must be in [0, {MAX_SLOT_PUSH:g}], got {args.slot_push:g}")
    if args.read_conditions and not args.guide:
        raise FacegenError("--read-conditions needs --guide BUNDLE (the classifier that reads the originals)")
    settings = Settings(n=args.n, fit_n=args.fit_n, edit_n=args.edit_n, seed=args.seed, attributes=attributes,
                        counterfactuals=args.counterfactuals, guide=args.guide, residual=args.residual,
                        read_conditions=args.read_conditions, slot_push=args.slot_push)
    paths = evaluate(locations, args.judge, out, args.shards, settings, fresh=args.fresh)
    print(f"quality: {paths['md']}\n         {paths['html']}\n         {paths['json']}")
    return 0
