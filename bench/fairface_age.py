"""Does an ordinal age head beat the 9-way softmax on FairFace age bins? ``ce`` vs ``ordinal``, measured in one run.

    python bench/fairface_age.py [--variants ce,ordinal] [--minutes-per-variant 11] [--epochs 40]
        [--eval-epochs 5] [--out out/bench/fairface_age] [--seed 0]

Trains every variant of ``--config`` (default ``configs/fairface_synth64.yaml``; variant ``ce`` sets
``model.age_loss=ce``, ``ordinal`` sets ``model.age_loss=ordinal``, see ``facegen/models/fairface.py``)
in-process: no Ray, one thread, Adam(W) from ``model.optimizer_settings`` via the harness's
``make_optimizers`` and ``train_one_epoch``. The variants train in turns, one epoch each, one at a time (so a
change in the machine's load hits them alike), from the same seed (same trunk and race/gender head weights),
on the same images in the same order with the same flips and dropout masks, until ``--epochs`` or until one
more round would pass ``--minutes-per-variant`` times the number of variants: every variant sees exactly the
same images.

An epoch is one of the Ray demo: the train split in batches of ``data.batch_size``, the last partial batch
dropped (2496 of 2550 images). Every ``--eval-epochs`` epochs and at the end each variant is measured on the
test and val splits (225 faces each at ``--n 3000``; one face is 0.44 points of accuracy):

age       exact age-bin accuracy, the prediction being argmax of ``predict_proba`` (what validation scores)
within1   share of faces whose predicted bin is within one of the true bin (``acc_within1/age``)
mae       mean absolute error in bins
rank      ordinal only: exact accuracy of CORN's own decoding (number of P(age > k) above 0.5, the median)
race, gender  accuracy of the other heads (to see that nothing else regresses)

The last table also gives each variant's ``late mean``: the test metrics averaged over its evaluations in the
second half of training (epochs > half its total), less noisy than one checkpoint of a constant-lr run.

If ``--shards`` has no manifest it is made first: ``facegen synth --layout fairface --n 3000 --out
out/demo/synth-fairface`` then ``facegen prepare --dataset fairface --src out/demo/synth-fairface --out
out/demo/fairface64 --no-progress``. Wall time (``train_s``) is each variant's own training time, on this
machine, as loaded as it was; ``images`` is the budget that does not depend on load. Results also go to
``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from facegen.config import load_config  # noqa: E402
from facegen.data.pipeline import read_examples  # noqa: E402
from facegen.data.shards import read_manifest  # noqa: E402
from facegen.models import build_model  # noqa: E402
from facegen.models.fairface import HEADS, ordinal_rank  # noqa: E402
from facegen.training.loop import epoch_seed, make_optimizers, train_one_epoch  # noqa: E402

VARIANTS = {"ce": ["model.age_loss=ce"], "ordinal": ["model.age_loss=ordinal"]}
SYNTH_SRC = "out/demo/synth-fairface"
LABELS = ("race", "age", "gender")


def ensure_shards(shards: str) -> None:
    """Make the synthetic FairFace shards with the CLI if ``shards`` has no manifest (see the docstring)."""
    if os.path.exists(os.path.join(shards, "manifest.json")):
        return
    cli = os.path.join(os.path.dirname(sys.executable), "facegen")
    if not os.path.exists(os.path.join(SYNTH_SRC, "fairface_label_val.csv")):
        subprocess.run([cli, "synth", "--layout", "fairface", "--n", "3000", "--out", SYNTH_SRC], check=True)
    subprocess.run([cli, "prepare", "--dataset", "fairface", "--src", SYNTH_SRC, "--out", shards, "--no-progress"],
                   check=True)


def epoch_batches(data: dict[str, torch.Tensor], batch_size: int, seed: int, epoch: int, hflip: bool):
    """One epoch of training batches whose shuffle and flips depend on (seed, epoch) only, so every variant
    sees the same images in the same order; the last partial batch is dropped, as the harness does."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    n = len(data["image"])
    order = torch.randperm(n, generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    for start in range(0, n - batch_size + 1, batch_size):
        rows = order[start:start + batch_size]
        batch = {key: data[key][rows] for key in ("image", *LABELS)}  # copies: flipping leaves the data alone
        if hflip:
            flip = flips[rows]
            batch["image"][flip] = batch["image"][flip].flip(-1)
        yield {**batch, "corrupt_rows": torch.tensor(0)}


@torch.no_grad()
def measure(model, data: dict[str, torch.Tensor], batch_size: int = 128) -> dict[str, float]:
    """Age exact / within-one / MAE (and for an ordinal head the CORAL rank decoding), race and gender accuracy."""
    model.eval()
    logits: dict[str, list[torch.Tensor]] = {head: [] for head in HEADS}
    for start in range(0, len(data["image"]), batch_size):
        for head, value in model.logits(data["image"][start:start + batch_size]).items():
            logits[head].append(value)
    out = {}
    for head in HEADS:
        head_logits, labels = torch.cat(logits[head]), data[head]
        keep = labels >= 0
        predicted = model.predict_classes(head, head_logits)[keep]
        out[head] = float((predicted == labels[keep]).float().mean())
        if head == "age":
            error = (predicted - labels[keep]).abs().float()
            out["within1"], out["mae"] = float((error <= 1).float().mean()), float(error.mean())
            ranks = ordinal_rank(head_logits)[keep] if head in model.ordinal else predicted
            out["rank"] = float((ranks == labels[keep]).float().mean())
    return out


class Run:
    """One variant being trained: its model, optimizers, images seen and training seconds."""

    def __init__(self, name: str, args) -> None:
        self.name = name
        self.cfg = load_config(args.config, [f"data.shards={args.shards}", *VARIANTS[name], *args.set])
        torch.manual_seed(args.seed)
        self.model = build_model(self.cfg.model)
        self.optimizers = make_optimizers(self.model, self.cfg)
        self.seen, self.train_s, self.loss = 0, 0.0, float("nan")

    def epoch(self, data: dict, seed: int, epoch: int) -> None:
        """One epoch of the shared image order; the dropout masks depend on (seed, epoch) only."""
        torch.manual_seed(epoch_seed(seed, epoch, 0))
        started = time.perf_counter()
        batches = epoch_batches(data["train"], self.cfg.data.batch_size, seed, epoch, self.cfg.data.hflip)
        means, seen, _ = train_one_epoch(self.model, self.model, self.optimizers, batches, torch.device("cpu"),
                                         contextlib.nullcontext())
        self.train_s += time.perf_counter() - started
        self.seen += seen
        self.loss = means.reduce().get("loss", float("nan"))

    def result(self, data: dict, epochs: int) -> dict:
        return {"variant": self.name, "epochs": epochs, "images": self.seen, "train_s": round(self.train_s, 1),
                **measure(self.model, data["test"]), "val": measure(self.model, data["val"]),
                "train_loss": self.loss, "overrides": VARIANTS[self.name]}


def train_all(names: list[str], args, data: dict):
    """Trains the variants in turns, one epoch each (one at a time, so the load hits them alike) until
    ``--epochs`` or until another round would pass ``--minutes-per-variant`` x variants; yields the result
    dicts of every ``--eval-epochs`` round and of the last."""
    runs = [Run(name, args) for name in names]
    budget_s, started, epoch, round_s = args.minutes_per_variant * 60 * len(runs), time.perf_counter(), 0, 0.0
    while not args.epochs or epoch < args.epochs:
        if epoch and time.perf_counter() - started + round_s > budget_s:
            break
        round_started = time.perf_counter()
        for run in runs:
            run.epoch(data, args.seed, epoch)
        round_s = time.perf_counter() - round_started
        epoch += 1
        last = epoch == args.epochs or time.perf_counter() - started + round_s > budget_s
        if last or epoch % args.eval_epochs == 0:
            yield [run.result(data, epoch) for run in runs]
        if last:
            return


ROW = ("{variant:<12}{epochs:>7.1f}{images:>8}{train_s:>8.0f}{age:>7.1%}{within1:>9.1%}{mae:>7.3f}{rank:>7.1%}"
       "{race:>7.1%}{gender:>8.1%}{val_age:>9.1%}{val_within1:>9.1%}")
HEADER = (f"{'variant':<12}{'epochs':>7}{'images':>8}{'train_s':>8}{'age':>7}{'within1':>9}{'mae':>7}{'rank':>7}"
          f"{'race':>7}{'gender':>8}{'val_age':>9}{'val_w1':>9}")


def row(result: dict) -> str:
    return ROW.format(**result, val_age=result["val"]["age"], val_within1=result["val"]["within1"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--config", default="configs/fairface_synth64.yaml", help="base config (default %(default)s)")
    parser.add_argument("--shards", default="out/demo/fairface64", help="FairFace shards (default %(default)s)")
    parser.add_argument("--variants", default="ce,ordinal",
                        help=f"comma-separated, from {', '.join(VARIANTS)} (default %(default)s)")
    parser.add_argument("--minutes-per-variant", type=float, default=11.0,
                        help="training wall clock per variant; the variants share the total (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=40,
                        help="stop after this many epochs of each variant if the time lasts (default %(default)s, "
                             "twice the config's 20; 0: time only)")
    parser.add_argument("--eval-epochs", type=int, default=5,
                        help="measure every this many epochs, besides at the end (default %(default)s)")
    parser.add_argument("--set", action="append", default=[], help="config override for every variant (repeatable)")
    parser.add_argument("--out", default="out/bench/fairface_age", help="folder for results.json (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, data order and dropout (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    names = args.variants.split(",")
    if not names or any(name not in VARIANTS for name in names):
        parser.error(f"--variants: names must come from {', '.join(VARIANTS)}, got {args.variants!r}")
    torch.set_num_threads(args.threads)

    os.makedirs(args.out, exist_ok=True)
    ensure_shards(args.shards)
    manifest = read_manifest(args.shards)
    data = {split: read_examples(manifest, split, 1_000_000) for split in ("train", "val", "test")}
    budget = f"{args.minutes_per_variant * len(names):g} min" + (f" or {args.epochs} epochs" if args.epochs else "")
    print(f"{args.config} {' '.join(args.set)}: {len(data['train']['image'])} train / {len(data['val']['image'])} "
          f"val / {len(data['test']['image'])} test faces, {args.threads} thread(s), {budget} for "
          f"{', '.join(names)} in turns, seed {args.seed}\n", flush=True)
    print(HEADER, flush=True)
    results: list[dict] = []
    for round_results in train_all(names, args, data):
        for result in round_results:
            results.append(result)
            print(row(result), flush=True)
    with open(f"{args.out}/results.json", "w") as f:
        json.dump({"command": " ".join(sys.argv), "threads": args.threads, "results": results}, f, indent=2)
    print(f"\n{HEADER}")
    for result in results:
        print(row(result))
    print("\nlate mean: the evaluations past half of each variant's epochs (epochs, images, train_s: its last)")
    for name in names:
        own = [r for r in results if r["variant"] == name]
        late = [r for r in own if r["epochs"] > own[-1]["epochs"] / 2] or own[-1:]
        keys = ("age", "within1", "mae", "rank", "race", "gender")
        mean = {key: sum(r[key] for r in late) / len(late) for key in keys}
        val = {key: sum(r["val"][key] for r in late) / len(late) for key in ("age", "within1")}
        print(row({**own[-1], **mean, "val": val, "variant": f"{name} x{len(late)}"}))
    print(f"\nresults.json in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
