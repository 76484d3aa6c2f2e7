"""``facegen train`` / ``python jobs/train.py``: one config, optional dotted overrides, one Ray Train run."""

from __future__ import annotations

import argparse
import json


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML, e.g. configs/vae_synth64.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted config overrides, e.g. train.epochs=5 data.shards=s3://bucket/shards")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs for a local Ray started by this command (ignored when joining a cluster)")
    parser.add_argument("--metrics-out", default=None, help="also write the final metrics as JSON here")


def run_train(args: argparse.Namespace) -> int:
    from facegen.config import load_config
    from facegen.data.shards import read_manifest
    from facegen.runtime import init_ray
    from facegen.training.trainer import check_compatible, fit

    # Every check that needs no cluster runs before Ray starts, so a mistake costs no start-up time.
    cfg = load_config(args.config, args.overrides)
    manifest = read_manifest(cfg.data.shards)
    check_compatible(cfg, manifest)
    init_ray(args.num_cpus)
    result = fit(cfg, manifest)
    final = {k: round(v, 6) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    print(json.dumps({"bundle": result.bundle, "metrics": final}, indent=2))
    if args.metrics_out:
        with open(args.metrics_out, "w") as f:
            json.dump({"bundle": result.bundle, "metrics": final, "history": result.history}, f, indent=2)
    return 0
