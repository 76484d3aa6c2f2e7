"""Does latent-edit augmentation help an attribute classifier trained on few labels? Equal optimiser steps, seeds.

Per seed S, three stages (only ``augment`` starts Ray, so only it needs the lock; each stays under ~5 min):

    python bench/augment_gain.py prepare --seed S --bundle VAE [--subset 200]        # no Ray
    flock /tmp/facegen-ray.lock python bench/augment_gain.py augment --seed S --bundle VAE --guide CLASSIFIER
    python bench/augment_gain.py train --seed S [--steps 400]                         # no Ray
then ``python bench/augment_gain.py report --seeds 0,1,2`` prints the table and one JSON line, and
``python bench/augment_gain.py labels --seed S`` how often each job's labels agree with an independent judge.

prepare: renders a fresh synthetic CelebA once (``--synth-seed``: faces the VAE never saw), keeps ``--subset``
train faces drawn by S plus every val and test face, writes their shards, fits the VAE's mean_diff directions on
the subset's labels only, and trains the baseline classifier on the subset, which is also saved as the
*self guide*: a guide that knows no more labels than the subset.

augment: the real ``facegen augment`` job (Ray Data) on the subset's train faces, ``--variants`` K of each:
``mean_diff`` (directions from the subset), ``guided`` with ``--guide`` (a classifier trained on other, labelled
faces: more labels than the subset, said in the report), ``self`` (guided by the self guide) -- each with
``--relabel``, so the job writes guide-corrected labels and the manifest keeps the edit's sign -- and ``recon``
(strength 0: the subset's reconstructions, labels unchanged; ``editor_recon``: the editor's); ``guided_res`` /
``self_res``: the same guided edits written with ``--residual`` (source + edited decode - reconstruction: no
reconstruction blur);
``editor`` / ``editor_res`` / ``editor_push``: ``--flip`` variants of the conditional editor ``--editor`` (each
variant the same face with one attribute the other way round, labelled by its new condition; the editor learnt
from other, labelled faces, like ``--guide``; ``_push``: the flipped entry set 0.5 past 0/1).

train: the classifier of ``configs/classifier_synth64.yaml`` trained in-process (bench/augment_train.py; not
the Ray harness, so every arm gets exactly ``--steps`` optimiser steps of the same batch size) on the subset
plus each arm's variants; the state with the best validation balanced accuracy is tested on the test split.
"""

from __future__ import annotations

import argparse
from functools import partial
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import augment_train as at  # noqa: E402
from facegen.augment.celeba import read_source_labels  # noqa: E402
from facegen.bundle import load_bundle, update_extras  # noqa: E402
from facegen.data.celeba import read_celeba  # noqa: E402
from facegen.data.pipeline import read_examples  # noqa: E402
from facegen.data.shards import read_manifest, write_shards  # noqa: E402
from facegen.data.synth import write_synthetic  # noqa: E402
from facegen.latent.store import directions_extras, fit_bundle_directions  # noqa: E402

# arm -> the augment outputs it adds to the subset: (job folder, labels from the job's --relabel file?)
ARMS = {
    "mean_diff": [("mean_diff", False)],
    "mean_diff+relabel": [("mean_diff", True)],
    "guided": [("guided", False)],
    "guided+relabel": [("guided", True)],
    "guided+relabel+recon": [("guided", True), ("recon", False)],
    "self+relabel": [("self", True)],
    "self+relabel+recon": [("self", True), ("recon", False)],
    "recon": [("recon", False)],
    "guided_res+relabel": [("guided_res", True)],
    "self_res+relabel": [("self_res", True)],
    "editor": [("editor", True)],  # labels: each variant's whole new condition (the job writes them)
    "editor_res": [("editor_res", True)],
    "editor_push": [("editor_push", True)],  # the flipped entry set 0.5 past 0/1 (--slot-push 0.5)
    "editor_recon": [("editor_recon", False)],  # control: the editor's reconstructions, the sources' labels
}


def subset_folder(synth: str, dest: str, n_train: int, seed: int) -> None:
    """A CelebA folder: ``n_train`` train faces of ``synth`` drawn by ``seed``, and every val and test face."""
    dataset = read_celeba(synth)
    train = [r for r in dataset.records if r.split == "train"]
    train = [train[i] for i in sorted(np.random.default_rng(seed).choice(len(train), n_train, replace=False))]
    keep = train + [r for r in dataset.records if r.split != "train"]
    os.makedirs(f"{dest}/img_align_celeba")
    for record in keep:
        shutil.copy(record.image_path, f"{dest}/img_align_celeba/{record.key}")
    codes = {"train": 0, "val": 1, "test": 2}
    lines = [str(len(keep)), " ".join(dataset.attribute_names)]
    lines += [" ".join([r.key, *("1" if v else "-1" for v in r.attrs)]) for r in keep]
    Path(f"{dest}/list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    Path(f"{dest}/list_eval_partition.txt").write_text("".join(f"{r.key} {codes[r.split]}\n" for r in keep))


def prepare(args, folder: str) -> None:
    synth = f"{args.work}/synth"
    if not os.path.exists(f"{synth}/list_attr_celeba.txt"):
        write_synthetic(synth, n=args.n, seed=args.synth_seed, progress=False)
    shutil.rmtree(folder, ignore_errors=True)
    subset_folder(synth, f"{folder}/subset", args.subset, args.seed)
    base = write_shards(read_celeba(f"{folder}/subset"), f"{folder}/shards", resolution=64, progress=False)
    shutil.copytree(args.bundle, f"{folder}/vae")  # directions from the subset's labels only
    batch = read_examples(base, "train", args.subset)
    directions = fit_bundle_directions(load_bundle(f"{folder}/vae").model, batch, base.attribute_names, ["mean_diff"])
    update_extras(f"{folder}/vae", directions_extras(directions))
    started = time.perf_counter()
    cfg = at.classifier_config(base.root, args.batch_size)
    model, loss, step, seen = at.train_steps(cfg, batch, read_examples(base, "val", base.rows("val")), args.steps,
                                             args.seed)
    at.save_classifier(model, cfg, f"{folder}/self_guide")
    test = read_examples(base, "test", base.rows("test"))
    result = {"metrics": at.test_metrics(model, test), "val_balanced_accuracy": loss,
              "best_step": step, "images_seen": seen, "train_rows": args.subset,
              "seconds": round(time.perf_counter() - started, 1)}
    Path(f"{folder}/baseline.json").write_text(json.dumps(result))
    print(f"prepare seed {args.seed}: baseline mean balanced accuracy "
          f"{result['metrics']['mean_balanced_accuracy']:.4f} ({result['seconds']} s)")


def run_inprocess(argv: list[str], reconstruct: bool = False) -> int:
    """``facegen augment``'s own planning, actor UDF and label writing, with the UDF called here in batches
    instead of by a Ray Data actor pool (``--no-ray``: when the shared Ray lock is not to be had). reconstruct:
    no edit at all, each variant the model's reconstruction with its source's labels (a control)."""
    import dataclasses

    import pyarrow as pa

    from facegen.augment.job import add_augment_arguments, finish, plan_job
    from facegen.augment.variants import EditVariants, read_sources

    parser = argparse.ArgumentParser()
    add_augment_arguments(parser)
    job = plan_job(parser.parse_args(argv[1:]))
    if reconstruct:
        job.spec = dataclasses.replace(job.spec, method="mean_diff", edits={}, flip=())
    udf = EditVariants(job.bundle, job.out, job.spec, job.directions, guide=job.guide, scale=job.scale,
                       conditions=job.conditions)
    rows = []
    for start in range(0, len(job.items), 32):
        table = read_sources(pa.Table.from_pylist(job.items[start:start + 32]), root=job.images)
        rows += udf(table).to_pylist()
    return finish(job, rows)


def augment(args, folder: str) -> None:
    from facegen.cli import main as facegen_main
    from facegen.runtime import init_ray

    run = run_inprocess if args.no_ray else facegen_main
    if not args.no_ray:
        init_ray(args.num_cpus)
    common = ["--images", f"{folder}/subset/img_align_celeba", "--layout", "celeba",
              "--labels", f"{folder}/subset/list_attr_celeba.txt", "--fit-rows", "500"]
    editor = ["--flip", args.flip, "--seed", str(args.seed)]  # a flip per variant, drawn per source
    jobs = {"mean_diff": ["--method", "mean_diff", "--edits", args.edits, "--relabel", "--guide", args.guide],
            "guided": ["--method", "guided", "--edits", args.edits, "--relabel", "--guide", args.guide],
            "self": ["--method", "guided", "--edits", args.edits, "--relabel", "--guide", f"{folder}/self_guide"],
            "recon": ["--method", "mean_diff", "--edits", args.edits.split(",")[0].split(":")[0] + ":0"],
            "guided_res": ["--method", "guided", "--edits", args.edits, "--relabel", "--guide", args.guide,
                           "--residual"],
            "self_res": ["--method", "guided", "--edits", args.edits, "--relabel", "--guide",
                         f"{folder}/self_guide", "--residual"],
            "editor": editor, "editor_res": [*editor, "--residual"], "editor_push": [*editor, "--slot-push", "0.5"],
            "editor_recon": ["--flip", "all"]}  # the plan of a flip job, run with no edit (run_inprocess)
    for name in args.jobs.split(","):
        started = time.perf_counter()
        variants = "1" if name in ("recon", "editor_recon") else str(args.variants)
        bundle = ["--bundle", args.editor if name.startswith("editor") else f"{folder}/vae"]
        argv = ["augment", *common, *bundle, *jobs[name], "--variants", variants, "--out", f"{folder}/{name}"]
        # no CLI edit decodes a CVAE's codes unchanged when every attribute is a slot: in-process, no edit
        runner = partial(run_inprocess, reconstruct=True) if name == "editor_recon" else run
        if runner(argv) != 0:
            raise SystemExit(f"augment {name} failed")
        print(f"augment seed {args.seed} {name}: {time.perf_counter() - started:.0f} s", flush=True)


def train(args, folder: str) -> None:
    base = read_manifest(f"{folder}/shards")
    cfg = at.classifier_config(base.root, args.batch_size)
    subset = read_examples(base, "train", base.rows("train"))
    val, test = (read_examples(base, s, base.rows(s)) for s in ("val", "test"))
    labels = read_source_labels(f"{folder}/subset/list_attr_celeba.txt")
    path = f"{folder}/arms.json"
    results = json.loads(Path(path).read_text()) if os.path.exists(path) else {}
    for arm in args.arms.split(","):  # "ARM@S": ARM with a share S% of every batch from the variants
        name, _, share = arm.partition("@")
        parts = [at.load_variants(f"{folder}/{job}", labels, relabelled) for job, relabelled in ARMS[name]]
        started = time.perf_counter()
        model, loss, step, seen = at.train_steps(cfg, at.concat(subset, *parts), val, args.steps, args.seed,
                                                 originals=subset["image"].shape[0],
                                                 share=float(share) / 100 if share else None)
        results[arm] = {"metrics": at.test_metrics(model, test), "val_balanced_accuracy": loss, "best_step": step,
                        "images_seen": seen, "train_rows": subset["image"].shape[0] + sum(p["image"].shape[0]
                                                                                          for p in parts),
                        "seconds": round(time.perf_counter() - started, 1)}
        Path(path).write_text(json.dumps(results))
        print(f"train seed {args.seed} {arm}: mean balanced accuracy "
              f"{results[arm]['metrics']['mean_balanced_accuracy']:.4f} ({results[arm]['seconds']} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["prepare", "augment", "train", "report", "labels"])
    parser.add_argument("--seed", type=int, default=0, help="subset draw and training seed of this invocation")
    parser.add_argument("--seeds", default="0,1,2", help="report: the seeds to pool")
    parser.add_argument("--bundle", help="VAE bundle (prepare, augment), e.g. out/sbs/calibrated_res1/bundle")
    parser.add_argument("--guide", help="augment: guide classifier bundle (never the evaluation classifier)")
    parser.add_argument("--editor", help="augment, jobs editor/editor_res: a CVAE conditioned on attributes, "
                                         "e.g. out/editor/runs/cvae_edit_synth64/bundle (make editor)")
    parser.add_argument("--flip", default="all", help="augment, editor jobs: the attributes variants flip")
    parser.add_argument("--judge", default="out/quality/runs/judge_synth64/bundle",
                        help="labels: the independent classifier that checks the variants' labels")
    parser.add_argument("--work", default="out/bench/augment_gain", help="scratch folder")
    parser.add_argument("--n", type=int, default=2000, help="synthetic faces rendered (10%% val, 10%% test)")
    parser.add_argument("--synth-seed", type=int, default=1, help="seed of the synthetic faces (demo uses 0)")
    parser.add_argument("--subset", type=int, default=200, help="labelled train faces kept")
    parser.add_argument("--variants", type=int, default=1)
    parser.add_argument("--edits", default="Smiling:+4,Eyeglasses:+4")
    parser.add_argument("--jobs", default="mean_diff,guided,self,recon", help="augment: which jobs")
    parser.add_argument("--arms", default=",".join(ARMS), help="train: which arms")
    parser.add_argument("--steps", type=int, default=150, help="optimiser steps of every arm")
    parser.add_argument("--batch-size", type=int, default=32, help="train: batch size of every arm (config: 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a shared box: 1)")
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--no-ray", action="store_true",
                        help="augment: run the job's UDF in-process instead of on Ray Data (no lock needed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work = os.path.abspath(args.work)
    folder = f"{args.work}/seed{args.seed}"
    if args.stage == "report":
        from augment_report import report
        report(args.work, [int(s) for s in args.seeds.split(",")], sys.argv)
    elif args.stage == "labels":
        from augment_report import label_agreement
        print(json.dumps({"seed": args.seed, **label_agreement(folder, args.judge)}))
    else:
        {"prepare": prepare, "augment": augment, "train": train}[args.stage](args, folder)


if __name__ == "__main__":
    main()
