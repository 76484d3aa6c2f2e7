"""Variants of one config trained side by side through Ray Train, in one run, then judged by one benchmark.

    python bench/train_side_by_side.py --config configs/vae_synth64.yaml --out out/sbs \\
        --variant calibrated:model.decoder_std=0 --variant res1:model.decoder_std=0,model.decoder_res_blocks=1 \\
        --set train.epochs=40 --judge out/demo/runs/judge_synth64/bundle

Every variant is the same ``facegen train`` path (Ray Data, DDP workers, checkpoints, bundle), run at the same
time on one local Ray, so they share the machine equally and see the same number of images; then
``facegen evaluate`` scores all the bundles in one table (OUT/quality/quality.md). Rerunning resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, ".")

from facegen.config import load_config  # noqa: E402
from facegen.quality.benchmark import Settings, evaluate  # noqa: E402
from facegen.runtime import init_ray  # noqa: E402
from facegen.training.trainer import fit  # noqa: E402


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    if not name or "/" in name:
        raise SystemExit(f"error: --variant {text!r}: expected NAME:key=value,key=value")
    return name, [o for o in overrides.split(",") if o]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the base experiment config")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME:k=v,k=v",
                        help="one variant: a name and its config overrides (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="k=v", help="override for every variant")
    parser.add_argument("--out", default="out/sbs", help="storage_path of the runs and the benchmark's folder")
    parser.add_argument("--judge", default=None, help="judge bundle for facegen evaluate (default: skip it)")
    parser.add_argument("--n", type=int, default=512, help="test images of the benchmark (default 512)")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="logical CPUs of the local Ray (default: 2 per variant + 2 for Ray Data's readers, "
                             "which would otherwise starve behind the workers' reservations)")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant]
    configs = {name: load_config(args.config, [*args.set, *overrides, f"train.storage_path={args.out}",
                                               f"train.name={name}"]) for name, overrides in variants}
    init_ray(args.num_cpus or 2 * len(configs) + 2)
    started = time.time()
    with ThreadPoolExecutor(max_workers=len(configs)) as pool:
        results = dict(zip(configs, pool.map(fit, configs.values())))
    print(f"trained {len(results)} variants side by side in {time.time() - started:.0f} s")
    for name, result in results.items():
        print(f"  {name:<16} {result.bundle}  epochs {len(result.history)}")
    if args.judge:
        paths = evaluate([r.bundle for r in results.values()], args.judge, f"{args.out}/quality",
                         settings=Settings(n=args.n))
        print(f"benchmark: {paths['md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
