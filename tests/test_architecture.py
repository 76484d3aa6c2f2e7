"""The code map's rules (docs/ARCHITECTURE.md), checked on the source: no import cycle, Ray only at the edges,
no branch on a family name, short files."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("facegen", "serve")
RAY_ALLOWED = ("facegen/data/pipeline.py", "facegen/training/", "facegen/augment/job.py", "facegen/runtime.py",
               "serve/")


def sources() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module of the packages."""
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(path: pathlib.Path, modules: dict[str, pathlib.Path], top_level_only: bool) -> set[str]:
    """The project modules ``path`` imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found.update(n for n in names if n in modules)
    return found


def test_module_level_imports_have_no_cycle():
    modules = sources()
    graph = {name: imported(path, modules, top_level_only=True) - {name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [node, nxt])
                                     if nxt in trail else f"import cycle through {node} -> {nxt}")
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_ray_is_imported_only_at_the_edges():
    offenders = []
    for name, path in sources().items():
        rel = path.relative_to(ROOT).as_posix()
        if any(rel.startswith(allowed) for allowed in RAY_ALLOWED):
            continue
        if re.search(r"^\s*(import ray|from ray[ .])", path.read_text(), re.M):
            offenders.append(rel)
    assert offenders == []


def test_callers_never_branch_on_a_family_name():
    pattern = re.compile(r"family ==|family in \(|hasattr\(model|config\.condition ==")
    offenders = [f"{path.relative_to(ROOT)}:{i}" for name, path in sources().items()
                 if not name.startswith("facegen.models")
                 for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_files_stay_short():
    too_long = {}
    for name, path in sources().items():
        limit = 250 if name.startswith("facegen.latent") else 300
        lines = len(path.read_text().splitlines())
        if lines > limit:
            too_long[path.relative_to(ROOT).as_posix()] = lines
    assert too_long == {}
