"""Does the info player's learning rate decide whether InfoGAN's codes get a meaning? Measured in one run.

    python bench/infogan_lr.py [--shards out/demo/digits32] [--steps 1000] [--lr-info 0.0002,0.001] \\
        [--set model.base_channels=16 --set model.max_channels=64]

Each player of ``configs/infogan_digits.yaml`` (generator, discriminator, info) has its own Adam. Adam divides
a gradient by its own running size, so the info step moves the generator by about ``lr_info`` per step,
whatever ``lambda_categorical`` says; Chen et al. add the info loss to the generator's own step instead.
This trains the same config in-process (no Ray, one thread, same seed, same batches) once per ``lr_info`` and
prints, every 250 steps and side by side:

code_acc        the categorical code read back from the model's own samples (what the info loss trains),
                averaged over the steps since the last row;
label_code_acc  the code as a digit classifier on the held-out test split under the best code-to-digit
                assignment (never trained on labels; ~95% in the paper on MNIST).

Digits shards: ``facegen prepare --dataset digits --out out/demo/digits32`` (``make demo`` leaves them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import contextlib  # noqa: E402

import torch  # noqa: E402

from facegen.config import load_config  # noqa: E402
from facegen.data.pipeline import read_examples  # noqa: E402
from facegen.data.shards import read_manifest  # noqa: E402
from facegen.models import build_model  # noqa: E402
from facegen.models.code_accuracy import categorical_code_accuracy  # noqa: E402
from facegen.training.loop import make_optimizers, train_one_epoch  # noqa: E402


def train(config: str, overrides: list[str], shards: str, steps: int, every: int, seed: int = 0):
    """Yields (step, code_acc over the last ``every`` steps, label_code_acc on the test split, the model) every
    ``every`` steps. The steps are the harness's own (``train_one_epoch``), fed random batches in-process."""
    torch.manual_seed(seed)
    cfg = load_config(config, [f"data.shards={shards}", *overrides])
    manifest = read_manifest(shards)
    data, test = read_examples(manifest, "train", 100_000), read_examples(manifest, "test", 100_000)
    model = build_model(cfg.model)
    optimizers = make_optimizers(model, cfg)
    order = torch.Generator().manual_seed(seed)

    def batches(n: int):
        for _ in range(n):
            rows = torch.randint(len(data["image"]), (cfg.data.batch_size,), generator=order)
            yield {"image": data["image"][rows], "corrupt_rows": torch.tensor(0)}

    for done in range(every, steps + every, every):
        chunk = min(every, steps - (done - every))
        means, _, _ = train_one_epoch(model, model, optimizers, batches(chunk), torch.device("cpu"),
                                      contextlib.nullcontext())
        model.eval()
        yield (min(done, steps), means.reduce()["code_acc"],
               categorical_code_accuracy(model, test["image"], test["label"]), model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/infogan_digits.yaml")
    parser.add_argument("--shards", default="out/demo/digits32")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--lr-info", default="0.0002,0.001", help="comma-separated info-player learning rates")
    parser.add_argument("--set", action="append", default=["model.base_channels=16", "model.max_channels=64"],
                        help="config override (repeatable); default: a half-width model, to run in minutes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rates = [float(r) for r in args.lr_info.split(",")]
    runs = {}
    for rate in rates:
        started = time.perf_counter()
        runs[rate] = list(train(args.config, [*args.set, f"model.lr_info={rate}"], args.shards, args.steps,
                                args.every))
        print(f"lr_info {rate:g}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print(f"\n{args.config} {' '.join(args.set)}, {args.steps} steps\n")
    header = "".join(f"{f'code_acc @{r:g}':>17}{f'label_acc @{r:g}':>18}" for r in rates)
    print(f"{'step':>6}{header}")
    for i, (step, *_) in enumerate(runs[rates[0]]):
        print(f"{step:>6}" + "".join(f"{runs[r][i][1]:>17.3f}{runs[r][i][2]:>18.3f}" for r in rates))
    first, last = runs[rates[0]][-1], runs[rates[-1]][-1]
    print(f"\nat step {first[0]}: label_code_acc lr_info {rates[-1]:g} / {rates[0]:g} = "
          f"{last[2] / max(first[2], 1e-9):.2f}x; code_acc {last[1]:.2f} vs {first[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
