"""What makes InfoGAN's categorical code pick the digit, across seeds? Variants x seeds, measured in one run.

    python bench/infogan_codes.py [--shards out/demo/digits32] [--steps 1500] [--seeds 0,1,2] \\
        [--variant 'name=key=value,key=value' ...] [--log out/infogan_codes.jsonl]

Each variant is a list of config overrides on ``configs/infogan_digits.yaml`` (on top of ``--set``, by default
a half-width model so a run takes minutes on one CPU thread). Every (variant, seed) is trained in-process by
``bench/infogan_lr.py``'s ``train`` (no Ray, one thread, the seed fixes init, codes and batches) and scored
on the held-out digits test split: label_code_acc, the categorical code as a digit classifier under the best
code-to-digit assignment (Hungarian), never trained on labels; ~95% in Chen et al. 2016 on MNIST.

Per variant it prints the final label_code_acc of each seed, their mean and spread (sample std, min-max), the
images seen per run and the wall time per run. Each finished run is also appended to ``--log`` as one JSON
line, so a long run can be polled; ``--report LOG`` prints the table from such a log without training.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from facegen.config import load_config  # noqa: E402
from facegen.data.pipeline import read_examples  # noqa: E402
from facegen.data.shards import read_manifest  # noqa: E402
from infogan_lr import train  # noqa: E402  (bench/ is on the path: the sibling script's trainer)

HALF_WIDTH = ["model.base_channels=16", "model.max_channels=64"]  # ~0.4 s a step on one shared CPU thread
# The levers tried for issue 12 (name -> overrides); --variant replaces them.
DEFAULT_VARIANTS = {
    "config": [],
    "cat_only": ["model.continuous=0"],
    "lambda_cat_2": ["model.lambda_categorical=2.0"],
}


def fake_purity(model, train_split: dict, n: int = 2000) -> float:
    """Does the generator tie its categorical code to the digit? A logistic regression fitted on the real
    train split (grey, pooled back to 8x8, the digits' native size) names the digit of ``n`` samples; the
    score is the code's accuracy against those names under the best code-to-digit assignment. High purity
    with a low label_code_acc means the code heads read real digits differently from the samples."""
    from sklearn.linear_model import LogisticRegression

    from facegen.models.code_accuracy import matched_mass

    def pooled(images: torch.Tensor):
        return torch.nn.functional.avg_pool2d(images.mean(1, keepdim=True), 4).flatten(1).numpy()

    reader = LogisticRegression(max_iter=2000).fit(pooled(train_split["image"]), train_split["label"].numpy())
    torch.manual_seed(1234)
    with torch.no_grad():
        z = model.prior_codes(n)
        digits = reader.predict(pooled(model.decode(z)))
    k = model.config.categorical[0]
    codes = z[:, :k].argmax(1).numpy()
    confusion = np.zeros((k, 10))
    np.add.at(confusion, (codes, digits), 1)
    return matched_mass(confusion) / n


@torch.no_grad()
def merged_digits(model, test: dict, share: float = 0.2) -> dict[str, list[int]]:
    """Where the code fails on the test split: code -> the digits that each make up at least ``share`` of
    the test images it is read on, for codes holding more than one (two digits sharing a code)."""
    from facegen.models.code_accuracy import predicted_categories

    codes, digits = predicted_categories(model, test["image"]).numpy(), test["label"].numpy()
    out = {}
    for code in np.unique(codes):
        counts = np.bincount(digits[codes == code], minlength=10)
        major = [int(d) for d in np.flatnonzero(counts >= share * counts.sum())]
        if len(major) > 1:
            out[str(int(code))] = major
    return out


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'name=key=value,key=value' (or just 'name=' for the config as is) -> (name, overrides)."""
    name, _, rest = text.partition("=")
    return name, [item for item in rest.split(",") if item]


def table(rows: list[dict]) -> str:
    """One line per (variant, seed) and a mean / spread line per variant."""
    lines = [f"{'variant':<18}{'seed':>5}{'label_acc':>11}{'best@step':>15}{'code_acc':>10}{'purity':>8}{'images':>9}"
             f"{'wall_s':>8}"]
    for name in dict.fromkeys(row["variant"] for row in rows):
        runs = [row for row in rows if row["variant"] == name]
        for row in runs:
            best = max(row["curve"], key=lambda point: point[2])
            lines.append(f"{name:<18}{row['seed']:>5}{row['label_code_acc']:>11.3f}"
                         f"{f'{best[2]:.3f}@{best[0]}':>15}{row['code_acc']:>10.3f}"
                         f"{row.get('fake_purity', float('nan')):>8.3f}{row['images']:>9}{row['wall_s']:>8.0f}")
        accs = [row["label_code_acc"] for row in runs]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"{name:<18}{'mean':>5}{statistics.mean(accs):>11.3f}  std {spread:.3f}  "
                     f"min-max {min(accs):.3f}-{max(accs):.3f}  ({' '.join(runs[0]['overrides']) or 'as is'})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/infogan_digits.yaml")
    parser.add_argument("--shards", default="out/demo/digits32")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250, help="steps between test-split scores")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variant", action="append", default=[], help="'name=key=value,...' (repeatable)")
    parser.add_argument("--set", action="append", default=None,
                        help="override for every variant (repeatable); default: a half-width model")
    parser.add_argument("--log", default="out/infogan_codes.jsonl", help="one JSON line per finished run")
    parser.add_argument("--report", metavar="LOG", help="print the table of an existing log and exit")
    args = parser.parse_args()
    if args.report:
        with open(args.report) as f:
            print(table([json.loads(line) for line in f if line.strip()]))
        return 0
    args.set = HALF_WIDTH if args.set is None else args.set
    torch.set_num_threads(1)
    variants = dict(parse_variant(v) for v in args.variant) if args.variant else DEFAULT_VARIANTS
    manifest = read_manifest(args.shards)  # read once, before any training: a missing folder fails at once
    splits = {split: read_examples(manifest, split, 100_000) for split in ("train", "test")}
    rows = []
    for name, overrides in variants.items():
        for seed in (int(s) for s in args.seeds.split(",")):
            started = time.perf_counter()
            curve = list(train(args.config, [*args.set, *overrides], args.shards, args.steps, args.every, seed))
            wall = time.perf_counter() - started
            step, code_acc, label_acc, model = curve[-1]
            purity = fake_purity(model, splits["train"])
            merged = merged_digits(model, splits["test"])
            curve = [point[:3] for point in curve]
            batch_size = load_config(args.config, [*args.set, *overrides]).data.batch_size
            row = {"variant": name, "seed": seed, "overrides": [*args.set, *overrides], "steps": step,
                   "images": step * batch_size, "label_code_acc": label_acc, "code_acc": code_acc,
                   "fake_purity": purity, "merged": merged, "curve": curve, "wall_s": wall}
            rows.append(row)
            os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
            with open(args.log, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name} seed {seed}: label_code_acc {label_acc:.3f} (curve "
                  f"{' '.join(f'{a:.2f}' for _, _, a in curve)}), {wall:.0f} s, fake purity {purity:.3f}, "
                  f"codes holding several digits: {merged or 'none'}",
                  file=sys.stderr, flush=True)
    print(f"\n{args.config} {' '.join(args.set)}, {args.steps} steps, test split\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
