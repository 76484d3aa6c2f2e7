"""Does the CVAE obey its condition slots? A plain CVAE against the constrained ones, judged by the judge.

    python bench/cvae_condition.py [--variants plain,classifier] [--images 19200] [--minutes-per-variant 30] \\
        [--classifier out/demo/runs/classifier_synth64/bundle] [--judge out/demo_prev/runs/judge_synth64/bundle] \\
        [--counterfactuals out/demo/counterfactuals] [--out out/bench/cvae_condition] [--seed 0]

A plain CVAE's encoder also writes the attributes into z, and the decoder learns to read them there: setting
a condition slot then barely changes the face (``model.constraint``, ``facegen/models/condition_constraint.py``).
This trains every variant of ``--config`` in-process (no Ray, one thread, the harness's own
``train_one_epoch``, every player of the model) on the same images in the same order, one after the other,
each for ``--images`` training images (or ``--minutes-per-variant``, whichever comes first), then measures on
the test split, with the independent judge (never the constraint's classifier):

follow    per condition attribute: each test face encoded under its true condition, decoded with that one
          attribute set to the opposite of its true value (the others true); the fraction the judge reads as
          the asked value. This is the slot edit's flip rate of ``facegen evaluate`` on every test face.
all16     per attribute, over decodes of each test face under all 2^C conditions: the fraction whose
          attribute the judge reads as asked (the slots set together, in every combination).
keep      per attribute, decodes under the true condition read as the true value (reconstruction agreement).
judge     per attribute, the judge's own accuracy on the real test faces: the ceiling of follow and keep for a
          decoder that draws the attribute as the renderer does (the judge reads Young at ~0.88).
cf_flip   the flip rate on the renderer's counterfactual pairs (``--counterfactuals``; 32 pairs per attribute),
          exactly as ``facegen evaluate``'s ``slot`` row computes it, and cf_drift, its drift of the other
          judged attributes.
PSNR      posterior-mean reconstructions of the test split, dB.
leak      a fresh probe's accuracy at recovering the condition from the posterior mean of test faces (a
          logistic regression per attribute fitted on the training codes; the majority rate = no leak).

``OUT/<variant>.png``: 8 test faces (row 1), their reconstruction (row 2), then under no attribute and each
attribute alone (rows 3..). Results go to ``OUT/results.json`` after every variant.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facegen.config import load_config  # noqa: E402
from facegen.data.pipeline import read_examples  # noqa: E402
from facegen.data.shards import read_manifest  # noqa: E402
from facegen.latent.grids import image_grid, save_png  # noqa: E402
from facegen.latent.scoring import batched  # noqa: E402
from facegen.pretrained import build_for_training  # noqa: E402
from facegen.quality.edits import Levers, editing  # noqa: E402
from facegen.quality.pairs import read_pairs  # noqa: E402
from facegen.quality.judge import load_judge  # noqa: E402
from facegen.quality.metrics import psnr  # noqa: E402
from facegen.training.loop import epoch_seed, make_optimizers, train_one_epoch  # noqa: E402

CLASSIFIER = "model.constraint.classifier={classifier}"
VARIANTS = {
    "plain": ["model.constraint.classifier_weight=0", "model.constraint.adversary_weight=0"],
    "classifier": [CLASSIFIER, "model.constraint.classifier_weight=200", "model.constraint.adversary_weight=0"],
    "adversary": ["model.constraint.classifier_weight=0", "model.constraint.adversary_weight=20"],
    "constrained": [CLASSIFIER, "model.constraint.classifier_weight=200", "model.constraint.adversary_weight=20"],
    "strong-adversary": [CLASSIFIER, "model.constraint.classifier_weight=200", "model.constraint.adversary_weight=500"],
}
BATCH = 100


def epoch_batches(data: dict[str, torch.Tensor], batch_size: int, seed: int, epoch: int, hflip: bool):
    """One epoch of (image, attrs) batches whose order and flips depend on (seed, epoch) only, so every variant
    sees the same ones; the last partial batch is dropped, as the harness does."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(data["image"]), generator=generator)
    flips = torch.rand(len(order), generator=generator) < 0.5
    for start in range(0, len(order) - batch_size + 1, batch_size):
        rows = order[start:start + batch_size]
        images = data["image"][rows]
        if hflip:
            images[flips[rows]] = images[flips[rows]].flip(-1)
        yield {"image": images, "attrs": data["attrs"][rows], "corrupt_rows": torch.tensor(0)}


def train(cfg, data, args) -> tuple[torch.nn.Module, int, float]:
    torch.manual_seed(args.seed)
    model = build_for_training(cfg.model)
    optimizers = make_optimizers(model, cfg)
    seen, spent, epoch, budget = 0, 0.0, 0, args.minutes_per_variant * 60
    while seen < args.images and spent < budget:
        model.set_epoch(epoch)
        torch.manual_seed(epoch_seed(args.seed, epoch, 0))
        started = time.perf_counter()

        def budgeted(batches):
            nonlocal seen
            for batch in batches:
                if seen >= args.images or spent + time.perf_counter() - started >= budget:
                    return
                seen += len(batch["image"])
                yield batch

        means, _, _ = train_one_epoch(model, model, optimizers, budgeted(
            epoch_batches(data, cfg.data.batch_size, args.seed, epoch, cfg.data.hflip)),
            torch.device("cpu"), contextlib.nullcontext())
        spent += time.perf_counter() - started
        epoch += 1
        print(f"  epoch {epoch}: {seen} images, {spent:.0f} s, " + "  ".join(
            f"{k}={v:.4g}" for k, v in means.reduce().items()), flush=True)
    return model.eval(), seen, spent


def probe_leak(model, train_data, test) -> float:
    """Accuracy of logistic regressions (one per attribute) reading the condition from posterior means."""
    from sklearn.linear_model import LogisticRegression

    def codes(data):
        cond = model.condition_of(data)
        return batched(model.encode, data["image"], BATCH, cond)[:, :model.config.latent_dim].numpy(), cond.numpy()

    (x_tr, c_tr), (x_te, c_te) = codes(train_data), codes(test)
    scores = [LogisticRegression(max_iter=2000).fit(x_tr, c_tr[:, i]).score(x_te, c_te[:, i])
              for i in range(c_tr.shape[1])]
    return float(np.mean(scores))


@torch.no_grad()
def measure(model, judge, test, train_data, args, name: str) -> dict:
    names = list(model.condition_attributes())
    judged = list(judge.attribute_names)
    cond = model.condition_of(test)
    codes = batched(model.encode, test["image"], BATCH, cond)
    recon = batched(model.decode, codes, BATCH)
    real = (judge.predict_proba(test["image"])[:, [judged.index(n) for n in names]] >= 0.5) == (cond >= 0.5)
    keep = (judge.predict_proba(recon)[:, [judged.index(n) for n in names]] >= 0.5) == (cond >= 0.5)
    out = {"psnr": psnr(recon, test["image"]), "leak": probe_leak(model, train_data, test), "attributes": {}}
    combos = torch.tensor(list(itertools.product((0.0, 1.0), repeat=len(names))))
    all_hits = torch.zeros(len(names))
    for combo in combos:  # every test face under every condition
        read = judge.predict_proba(batched(model.decode, codes, BATCH, combo.expand_as(cond).contiguous()))
        all_hits += ((read[:, [judged.index(n) for n in names]] >= 0.5) == (combo >= 0.5)).float().mean(0)
    levers = Levers(model, {}, lambda: {})
    for i, attr in enumerate(names):
        flipped = cond.clone()
        flipped[:, i] = 1 - flipped[:, i]
        read = judge.predict_proba(batched(model.decode, codes, BATCH, flipped))[:, judged.index(attr)] >= 0.5
        row = {"follow": float((read == (flipped[:, i] >= 0.5)).float().mean()),
               "all16": float(all_hits[i] / len(combos)), "keep": float(keep[:, i].float().mean()),
               "judge": float(real[:, i].float().mean())}
        if args.counterfactuals:
            pairs = read_pairs(args.counterfactuals, attr, 1000)
            cf = next(r for r in editing(model, judge, levers, pairs, judged)[0] if r["method"] == "slot")
            row.update(cf_flip=cf["flip_rate"], cf_drift=cf["drift"], cf_n=cf["n"])
        out["attributes"][attr] = row
    faces = test["image"][:8]
    grid = model.decode_all_conditions(codes[:8]).transpose(0, 1).flatten(0, 1)  # condition-major rows
    save_png(image_grid(torch.cat([faces, recon[:8], grid]), nrow=8), f"{args.out}/{name}.png")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cvae_synth64.yaml")
    parser.add_argument("--shards", default="out/demo/shards64")
    parser.add_argument("--classifier", default="out/demo/runs/classifier_synth64/bundle",
                        help="the constraint's frozen classifier bundle (not the judge)")
    parser.add_argument("--judge", default="out/demo_prev/runs/judge_synth64/bundle")
    parser.add_argument("--counterfactuals", default="out/demo/counterfactuals", help="'' to skip")
    parser.add_argument("--variants", default="plain,classifier", help=f"from {', '.join(VARIANTS)}")
    parser.add_argument("--images", type=int, default=19200, help="training images per variant")
    parser.add_argument("--minutes-per-variant", type=float, default=30.0)
    parser.add_argument("--set", action="append", default=[], help="config override for every variant")
    parser.add_argument("--out", default="out/bench/cvae_condition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r} (have {', '.join(VARIANTS)})")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    judge = load_judge(args.judge)
    manifest = read_manifest(args.shards)
    train_data, test = read_examples(manifest, "train", 1_000_000), read_examples(manifest, "test", 1_000_000)
    print(f"{args.config}: {len(train_data['image'])} train / {len(test['image'])} test, {args.images} images "
          f"per variant, judge {args.judge}, constraint classifier {args.classifier}", flush=True)
    results = []
    for name in args.variants.split(","):
        overrides = [o.format(classifier=args.classifier) for o in VARIANTS[name]]
        cfg = load_config(args.config, [f"data.shards={args.shards}", *overrides, *args.set])
        print(f"== {name}: {' '.join(overrides)}", flush=True)
        model, seen, spent = train(cfg, train_data, args)
        result = {"variant": name, "images": seen, "train_s": round(spent), "overrides": overrides,
                  **measure(model, judge, test, train_data, args, name)}
        results.append(result)
        print(json.dumps(result, indent=1), flush=True)
        with open(f"{args.out}/results.json", "w") as f:
            json.dump({"command": " ".join(sys.argv), "results": results}, f, indent=2)
    print(f"\n{'variant':<13}{'images':>7}{'PSNR':>7}{'leak':>6}  attribute: follow / all16 / keep / cf_flip "
          "(judge on real faces)")
    for r in results:
        cells = "  ".join(f"{a}: {v['follow']:.2f}/{v['all16']:.2f}/{v['keep']:.2f}/{v.get('cf_flip', float('nan')):.2f} "
                          f"({v.get('judge', float('nan')):.2f})"
                          for a, v in r["attributes"].items())
        print(f"{r['variant']:<13}{r['images']:>7}{r['psnr']:>7.2f}{r['leak']:>6.2f}  {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
