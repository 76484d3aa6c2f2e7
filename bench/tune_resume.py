"""Kill a Tune search mid-way, resume it, and compare with the same search left alone.

    flock /tmp/facegen-ray.lock .venv/bin/python bench/tune_resume.py [--out out/bench/tune_resume] [--epochs 2]

One local Ray (this process) holds the cluster; the searches are ``jobs/tune.py`` drivers joining it through
``RAY_ADDRESS``, as under ``ray job submit``. A grid of learning rates (deterministic, so both searches run the
same trials; ``grace_period = epochs`` so ASHA's decisions cannot depend on timing):

1. the reference search runs to the end;
2. the same search under another name is SIGKILLed as soon as its first trial has finished;
3. ``jobs/tune.py ... --resume`` finishes it.

It prints whether the trials finished before the kill were left alone (result rows and checkpoints untouched),
and whether the resumed search exports the reference's best bundle (same config, same weights).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LRS = [1e-3, 3e-3, 1e-2]


def _setup(out: Path, epochs: int) -> tuple[Path, Path]:
    from facegen.data.celeba import read_celeba
    from facegen.data.shards import write_shards
    from facegen.data.synth import write_synthetic

    raw, shards = out / "synth", out / "shards32"
    if not (shards / "manifest.json").exists():
        write_synthetic(str(raw), n=160, seed=0, layout="celeba", progress=False)
        write_shards(read_celeba(str(raw)), str(shards), resolution=32, rows_per_shard=40, progress=False)
    config = {"model": {"family": "vae", "resolution": 32, "latent_dim": 8, "base_channels": 8, "max_channels": 32},
              "data": {"shards": str(shards), "batch_size": 16, "max_rows": 64, "shuffle_buffer": 0},
              "train": {"epochs": epochs, "num_workers": 1, "cpus_per_worker": 0.5, "name": "search",
                        "storage_path": str(out / "runs")}}
    space = {"metric": "val/loss", "mode": "min", "grace_period": epochs, "space": {"train.lr": {"grid": LRS}}}
    (out / "tiny.yaml").write_text(yaml.safe_dump(config))
    (out / "tiny.tune.yaml").write_text(yaml.safe_dump(space))
    return out / "tiny.yaml", out / "tiny.tune.yaml"


def _tune(config: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "jobs/tune.py", "--config", str(config), "--num-samples", "1", f"train.name={name}",
            *extra]


def _finished_trials(search: Path, epochs: int) -> dict[str, int]:
    """Trial id -> rows in its result.json, for trials that reported their last epoch."""
    done = {}
    for path in search.glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if any(r.get("training_iteration") == epochs for r in rows):
            done[rows[-1]["trial_id"]] = len(rows)
    return done


def _checkpoints(runs: Path, name: str, trial_ids) -> dict[str, int]:
    """Every file of these trials' Train runs (``<name>-<trial id>/``) with its mtime."""
    return {str(p.relative_to(runs)): p.stat().st_mtime_ns for t in trial_ids
            for p in (runs / f"{name}-{t}").rglob("*") if p.is_file()}


def _bundle(path: Path) -> tuple[dict, dict]:
    config = json.loads((path / "config.json").read_text())
    return config, torch.load(path / "weights.pt", map_location="cpu", weights_only=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench/tune_resume")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config, _space = _setup(out, args.epochs)
    runs = out / "runs"

    import ray

    ray.init(num_cpus=args.num_cpus, include_dashboard=True, log_to_driver=False)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still shuts Ray down (finally)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    driver = None
    try:
        timings = {}
        started = time.monotonic()
        subprocess.run(_tune(config, "ref"), cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        timings["reference search"] = time.monotonic() - started

        started = time.monotonic()
        driver = subprocess.Popen(_tune(config, "kill"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        search = runs / "kill-search"
        while not _finished_trials(search, args.epochs):
            assert driver.poll() is None, "the search ended before any trial finished"
            time.sleep(0.5)
        time.sleep(3)  # let Tune save its experiment state after the trial (it does so every few seconds)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        timings["killed search, until the kill"] = time.monotonic() - started
        before_trials = _finished_trials(search, args.epochs)
        before_files = _checkpoints(runs, "kill", before_trials)

        started = time.monotonic()
        subprocess.run(_tune(config, "kill", "--resume"), cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        timings["resumed search"] = time.monotonic() - started
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        ray.shutdown()

    after_trials = _finished_trials(search, args.epochs)
    untouched = {t: after_trials.get(t) == rows for t, rows in before_trials.items()}
    files_kept = bool(before_files) and _checkpoints(runs, "kill", before_trials) == before_files
    ref_config, ref_weights = _bundle(runs / "ref-search" / "best_bundle")
    got_config, got_weights = _bundle(search / "best_bundle")
    for config in (ref_config, got_config):  # the searches' names differ by design
        config["train"].pop("name")
    same_weights = ref_weights.keys() == got_weights.keys() and all(
        torch.equal(ref_weights[k], got_weights[k]) for k in ref_weights)
    report = {
        "trials finished before the kill": len(before_trials),
        "trials finished in the end (of %d)" % len(LRS): len(after_trials),
        "finished trials not re-run (result rows unchanged)": all(untouched.values()),
        "their Train runs untouched (%d files)" % len(before_files): files_kept,
        "best lr, reference / resumed": [ref_config["train"]["lr"], got_config["train"]["lr"]],
        "best bundle config identical (but train.name)": ref_config == got_config,
        "best bundle weights identical": same_weights,
        "max abs weight difference": max(float((ref_weights[k].float() - got_weights[k].float()).abs().max())
                                         for k in ref_weights),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    print(json.dumps(report, indent=2))
    return 0 if all(untouched.values()) and files_kept and ref_config == got_config and same_weights else 1


if __name__ == "__main__":
    sys.exit(main())
