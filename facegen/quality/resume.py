"""Resumable ``facegen evaluate``: each bundle's result is stored beside its pictures
(``OUT/<run name>/result.json``, :func:`folder_names`) under a key of everything it was computed from, and a
later evaluation whose key matches reuses it instead of evaluating that bundle again.

The key holds fingerprints of the bundle (the hash of its files: weights, config, metadata and stored extras
such as attribute directions), of the judge and the guide, of the evaluation shards' manifest and
of the counterfactual sets, and every setting; so an interrupted run resumes where it stopped, and a retrained
bundle, another judge or a changed setting is evaluated afresh. ``--fresh`` ignores stored results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any

from facegen import io as fsio

RESULT = "result.json"
_FORMAT = 1  # bump when a result's contents change meaning, so older stored results are not reused


BUNDLE_FILES = ("meta.json", "config.json", "weights.pt", "extras.pt")


def fingerprint(location: str, names: tuple[str, ...] = BUNDLE_FILES) -> str:
    """A short hash of the named files of the folder at ``location`` (those that exist)."""
    fs, root = fsio.resolve(location)
    digest = hashlib.sha256()
    for name in names:
        path = fsio.join(root, name)
        if fsio.is_file(fs, path):
            digest.update(name.encode() + b"\0" + fsio.read_bytes(fs, path) + b"\0")
    return digest.hexdigest()[:16]


def listing(location: str | None) -> str | None:
    """A short hash of a folder's file names and sizes (the counterfactual sets), None for no folder."""
    if location is None:
        return None
    fs, root = fsio.resolve(location)
    return hashlib.sha256(json.dumps(sorted(fsio.list_files(fs, root).items())).encode()).hexdigest()[:16]


def result_key(location: str, judge: str, guide: str | None, shards: str, counterfactuals: str | None,
               settings: Any) -> dict[str, Any]:
    """Everything a bundle's evaluation result depends on, as a JSON-able dict."""
    return {"format": _FORMAT, "bundle": location, "bundle_files": fingerprint(location),
            "judge": fingerprint(judge), "guide": fingerprint(guide) if guide else None,
            "shards": shards, "manifest": fingerprint(shards, ("manifest.json",)),
            "counterfactuals": listing(counterfactuals), "settings": dataclasses.asdict(settings)}


def folder_names(locations: list[str]) -> list[str]:
    """Each bundle's output folder: its run's name (``runs/vae_synth64/bundle`` -> ``vae_synth64``; another
    bundle folder's own name), file-safe, ``-2``, ``-3``... for repeats."""
    out, seen = [], {}
    for location in locations:
        parts = location.rstrip("/").split("/")
        name = parts[-2] if parts[-1] == "bundle" and len(parts) > 1 else parts[-1]
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "bundle"
        seen[safe] = seen.get(safe, 0) + 1
        out.append(safe if seen[safe] == 1 else f"{safe}-{seen[safe]}")
    return out


def _plain(value: Any) -> Any:  # numpy scalars and arrays (and tensors) to Python; inf and NaN kept
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def load(folder: str, key: dict[str, Any]) -> dict | None:
    """The result stored in ``folder`` if its key matches ``key`` (and its pictures are all there), else None."""
    try:
        with open(os.path.join(folder, RESULT)) as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return None
    if stored.get("key") != json.loads(json.dumps(key, default=_plain)):
        return None
    result = stored["result"]
    result["pictures"] = {caption: os.path.join(folder, path) for caption, path in result["pictures"].items()}
    if not all(os.path.isfile(p) for p in result["pictures"].values()):
        return None
    return result


def forget(folder: str) -> None:
    """Drop a stored result before its folder's pictures are rewritten (a crash then leaves none to reuse)."""
    try:
        os.remove(os.path.join(folder, RESULT))
    except FileNotFoundError:
        pass


def store(folder: str, key: dict[str, Any], result: dict) -> None:
    """Write ``result`` (pictures relative to ``folder``) with its ``key``, atomically."""
    relative = {**result, "pictures": {c: os.path.relpath(p, folder) for c, p in result["pictures"].items()}}
    text = json.dumps({"key": key, "result": relative}, default=_plain, indent=1)
    os.makedirs(folder, exist_ok=True)
    with fsio.atomic_path(os.path.join(folder, RESULT)) as tmp, open(tmp, "w") as f:
        f.write(text + "\n")
