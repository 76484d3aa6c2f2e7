"""Does latent-edit augmentation help an attribute classifier trained on few labels? Measured in one run.

    flock /tmp/facegen-ray.lock python bench/augment_gain.py --bundle out/demo/runs/vae_demo64/bundle \\
        [--subset 200] [--variants 2] [--edits "Smiling:+2,Eyeglasses:+2"] [--epochs 6] [--work DIR]

1. Renders a fresh synthetic CelebA (``write_synthetic``, its own seed: faces the VAE never saw) and keeps a
   small labelled train subset plus the dataset's whole val and test splits.
2. Fits the VAE's attribute directions on the subset's labels only (a copy of the bundle; the bundle's own
   training labels are not used), then runs the real ``facegen augment`` job (Ray Data) on the subset's images:
   K edited variants of each train face, labelled with the edited attributes, val/test copied unedited.
3. Trains ``configs/classifier_synth64.yaml`` twice through the real harness (``trainer.fit``, same config and
   early stopping): on the subset, and on the subset + variants.
4. Evaluates both on the same held-out test split (the subset's shards) and prints accuracy and balanced
   accuracy, mean over attributes and on the edited ones, side by side with the gain; then one JSON line.

With the same epochs the augmented run takes (K + 1) times the optimiser steps, so a gain can come from that
alone; ``--baseline-epochs`` gives the subset-only run as many steps instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facegen.bundle import load_bundle, update_extras  # noqa: E402
from facegen.cli import main as facegen_main  # noqa: E402
from facegen.config import load_config  # noqa: E402
from facegen.data.celeba import read_celeba  # noqa: E402
from facegen.data.pipeline import read_examples  # noqa: E402
from facegen.data.shards import write_shards  # noqa: E402
from facegen.data.synth import write_synthetic  # noqa: E402
from facegen.augment.variants import parse_edits  # noqa: E402
from facegen.latent.store import directions_extras, fit_bundle_directions  # noqa: E402
from facegen.reporting.report import evaluate  # noqa: E402
from facegen.runtime import init_ray  # noqa: E402
from facegen.training.trainer import fit  # noqa: E402


def subset_folder(synth: str, dest: str, n_train: int) -> None:
    """A CelebA folder holding the first ``n_train`` train faces and every val and test face of ``synth``."""
    dataset = read_celeba(synth)
    train = [r for r in dataset.records if r.split == "train"][:n_train]
    keep = train + [r for r in dataset.records if r.split != "train"]
    os.makedirs(f"{dest}/img_align_celeba")
    for record in keep:
        shutil.copy(record.image_path, f"{dest}/img_align_celeba/{record.key}")
    codes = {"train": 0, "val": 1, "test": 2}
    lines = [str(len(keep)), " ".join(dataset.attribute_names)]
    lines += [" ".join([r.key, *("1" if v else "-1" for v in r.attrs)]) for r in keep]
    Path(f"{dest}/list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    Path(f"{dest}/list_eval_partition.txt").write_text("".join(f"{r.key} {codes[r.split]}\n" for r in keep))


def bundle_with_subset_directions(bundle: str, dest: str, manifest, n_train: int) -> str:
    """Copy ``bundle`` to ``dest`` with directions fitted on the subset's train labels only."""
    shutil.copytree(bundle, dest)
    model = load_bundle(dest).model
    batch = read_examples(manifest, "train", n_train)
    directions = fit_bundle_directions(model, batch, manifest.attribute_names, methods=["mean_diff"])
    return update_extras(dest, directions_extras(directions))


def train_classifier(shards: str, name: str, work: str, epochs: int) -> str:
    cfg = load_config("configs/classifier_synth64.yaml",
                      [f"data.shards={shards}", f"train.epochs={epochs}", f"train.storage_path={work}/runs",
                       f"train.name={name}"])
    return fit(cfg).bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="VAE bundle, e.g. out/demo/runs/vae_demo64/bundle")
    parser.add_argument("--work", default="out/bench/augment_gain", help="scratch folder (replaced)")
    parser.add_argument("--n", type=int, default=2000, help="synthetic faces rendered (10%% val, 10%% test)")
    parser.add_argument("--synth-seed", type=int, default=1, help="seed of the synthetic faces (demo uses 0)")
    parser.add_argument("--subset", type=int, default=200, help="labelled train faces kept")
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--edits", default="Smiling:+2,Eyeglasses:+2")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--baseline-epochs", type=int, default=None,
                        help="epochs of the subset-only run (default --epochs; (K+1) x --epochs gives both runs "
                             "about the same optimiser steps)")
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args()
    edited = list(parse_edits(args.edits))
    work = os.path.abspath(args.work)
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()

    write_synthetic(f"{work}/synth", n=args.n, seed=args.synth_seed, progress=False)
    subset_folder(f"{work}/synth", f"{work}/subset", args.subset)
    base = write_shards(read_celeba(f"{work}/subset"), f"{work}/shards_base", resolution=64, progress=False)
    bundle = bundle_with_subset_directions(args.bundle, f"{work}/bundle", base, args.subset)

    init_ray(args.num_cpus)
    augment_argv = ["augment", "--bundle", bundle, "--images", f"{work}/subset/img_align_celeba",
                    "--out", f"{work}/augmented", "--edits", args.edits, "--variants", str(args.variants),
                    "--layout", "celeba", "--labels", f"{work}/subset/list_attr_celeba.txt", "--with-sources"]
    if facegen_main(augment_argv) != 0:
        raise SystemExit("augment failed")
    aug = write_shards(read_celeba(f"{work}/augmented"), f"{work}/shards_aug", resolution=64, progress=False)
    baseline_epochs = args.baseline_epochs or args.epochs
    bundles = {"subset": train_classifier(base.root, "subset", work, baseline_epochs),
               "subset+augmented": train_classifier(aug.root, "augmented", work, args.epochs)}

    test = read_examples(base, "test", base.rows("test"))  # the same held-out faces for both
    results = {name: evaluate(load_bundle(b), test) for name, b in bundles.items()}
    keys = ["mean_accuracy", "mean_balanced_accuracy", *(f"{m}/{a}" for a in edited for m in ("acc", "balanced_acc"))]
    print("\n$ " + " ".join([sys.executable, *sys.argv]))
    print(f"train images: subset {base.rows('train')}, subset+augmented {aug.rows('train')}; "
          f"test images {base.rows('test')}; epochs {baseline_epochs} / {args.epochs}; edits {args.edits} x {args.variants} variants")
    print(f"{'metric':32s} {'subset':>9s} {'+augmented':>11s} {'gain':>8s}")
    for key in keys:
        a, b = results["subset"].get(key, float("nan")), results["subset+augmented"].get(key, float("nan"))
        print(f"{key:32s} {a:9.4f} {b:11.4f} {b - a:+8.4f}")
    figures = {f"{name}/{k}": round(results[name].get(k, float("nan")), 4) for name in results for k in keys}
    print(json.dumps({"bench": "augment_gain", "subset": args.subset, "variants": args.variants, "edits": args.edits,
                      "epochs": args.epochs, "baseline_epochs": baseline_epochs, "test_rows": base.rows("test"),
                      "seconds": round(time.perf_counter() - started, 1), **figures}))


if __name__ == "__main__":
    main()
