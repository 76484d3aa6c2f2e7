"""The table of bench/augment_gain.py: per arm and seed the mean balanced accuracy on the test split, the paired
gain over the baseline (same seed: same subset, same initialisation, same steps), its mean and 95% t-interval,
and per attribute the mean gain of each arm (which attributes help, which hurt)."""

from __future__ import annotations

import json
import math
import os

from scipy import stats

KEY = "mean_balanced_accuracy"


def interval(gains: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of paired differences."""
    n = len(gains)
    mean = sum(gains) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = math.sqrt(sum((g - mean) ** 2 for g in gains) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def report(work: str, seeds: list[int], argv: list[str]) -> dict:
    runs = {}
    for seed in seeds:
        folder = f"{work}/seed{seed}"
        arms = json.load(open(f"{folder}/arms.json")) if os.path.exists(f"{folder}/arms.json") else {}
        runs[seed] = {"baseline": json.load(open(f"{folder}/baseline.json")), **arms}
    names = [a for a in runs[seeds[0]] if all(a in runs[s] for s in seeds)]
    attributes = sorted(k.split("/", 1)[1] for k in runs[seeds[0]]["baseline"]["metrics"]
                        if k.startswith("balanced_acc/"))
    print("$ python " + " ".join(argv))
    header = " ".join(f"seed {s:>3}" for s in seeds)
    print(f"{'arm':24s} {'train rows':>10s} {header} {'mean gain':>9s} {'95% CI':>17s}")
    summary = {}
    for arm in names:
        values = [runs[s][arm]["metrics"][KEY] for s in seeds]
        gains = [runs[s][arm]["metrics"][KEY] - runs[s]["baseline"]["metrics"][KEY] for s in seeds]
        mean, low, high = interval(gains)
        per_attribute = {a: round(sum(runs[s][arm]["metrics"][f"balanced_acc/{a}"]
                                      - runs[s]["baseline"]["metrics"][f"balanced_acc/{a}"] for s in seeds)
                                  / len(seeds) * 100, 1) for a in attributes}
        summary[arm] = {"balanced_accuracy": [round(v, 4) for v in values], "gain": round(mean, 4),
                        "ci95": [round(low, 4), round(high, 4)], "train_rows": runs[seeds[0]][arm]["train_rows"],
                        "images_seen": runs[seeds[0]][arm]["images_seen"], "per_attribute_gain_points": per_attribute}
        cells = " ".join(f"{v:8.4f}" for v in values)
        ci = "" if arm == "baseline" else f"[{low:+.4f}, {high:+.4f}]"
        print(f"{arm:24s} {runs[seeds[0]][arm]['train_rows']:10d} {cells} {mean:+9.4f} {ci:>17s}")
    print("\nper-attribute balanced-accuracy gain, points, mean over seeds:")
    shown = [a for a in names if a != "baseline"]
    print(f"{'attribute':20s} " + " ".join(f"{a[:14]:>14s}" for a in shown))
    for attribute in attributes:
        print(f"{attribute:20s} " + " ".join(f"{summary[a]['per_attribute_gain_points'][attribute]:+14.1f}"
                                             for a in shown))
    print(json.dumps({"bench": "augment_gain", "seeds": seeds, **summary}))
    return summary


def label_agreement(folder: str, judge_location: str,
                    jobs=("recon", "mean_diff", "guided", "self", "guided_res", "self_res", "editor",
                          "editor_res", "editor_push")) -> dict:
    """How often each labelling of a job's variants agrees with an independent judge (the hypothesis that edits
    hurt through label noise): on the attributes each variant's edit names, and on the others (drift), by the
    edit's sign and by the job's own label file (``--relabel``; ``--flip``: the new condition). The judge is not
    the guide and not the classifier under test."""
    import torch

    import augment_train as at
    from facegen.augment.celeba import read_source_labels
    from facegen.attributes import CELEBA_ATTRIBUTES
    from facegen.bundle import load_bundle

    judge = load_bundle(judge_location).model.eval()
    columns = [CELEBA_ATTRIBUTES.index(a) for a in judge.attribute_names]
    labels = read_source_labels(f"{folder}/subset/list_attr_celeba.txt")
    out = {}
    for job in (j for j in jobs if os.path.exists(f"{folder}/{j}/manifest.jsonl")):
        rows = [json.loads(line) for line in open(f"{folder}/{job}/manifest.jsonl")]
        rows = [r for r in rows if r["output"] is not None and r["variant"]]  # load_variants' rows, same order
        edited = torch.tensor([[a in r["edits"] for a in judge.attribute_names] for r in rows])  # (N, A)
        result = {}
        flips = all(r["method"] == "flip" for r in rows)  # a flip has no sign: its labels are its new condition
        for name, relabelled in (("sign", False), ("relabel", True)):
            written = os.path.exists(f"{folder}/{job}/list_attr_celeba.txt")
            if (relabelled and not written) or (flips and not relabelled):
                continue
            batch = at.load_variants(f"{folder}/{job}", labels, relabelled)
            with torch.no_grad():
                read = judge.predict_proba(batch["image"]) >= 0.5  # (N, A)
            agree = (read == (batch["attrs"][:, columns] > 0.5)).float()
            result[name] = {"edited": round(float(agree[edited].mean()), 3),
                            "others": round(float(agree[~edited].mean()), 3)}
        out[job] = result
    return out
