from __future__ import annotations

import pytest
import torch

from facegen.latent.naming import name_dimensions, naming_figure, naming_table_markdown
from tests.latent.toy import NAMES, make_space


def check_named(rows, label: str) -> None:
    """The three attribute dimensions come first, each named after its own attribute, fully monotonic."""
    assert {row.dim for row in rows[:3]} == {0, 1, 2}
    for row in rows[:3]:
        assert row.attribute == NAMES[row.dim] and row.label == f"{label}[{row.dim}]"
        assert row.effect > 0.5 and row.monotonicity > 0.99
        others = [abs(v) for name, v in row.effects.items() if name != row.attribute]
        assert max(others) < 0.05
    assert all(abs(row.effect) < 0.05 for row in rows[3:])  # nuisance dimensions drive nothing


def test_axis_aligned_dimensions_are_named_after_their_attribute():
    space = make_space(n=500, dim=6, rotate=False)
    rows = name_dimensions(space.model, space.codes, space.scorer, steps=7, n_sources=8, dims_per_batch=4)
    assert len(rows) == 6 and abs(rows[0].effect) >= abs(rows[-1].effect)
    check_named(rows, "z")


def test_rotated_directions_are_named_through_a_basis():
    space = make_space(n=500, dim=6, rotate=True)
    raw = name_dimensions(space.model, space.codes, space.scorer, steps=7, n_sources=8)
    # the raw dimensions mix the attributes: each drives at least two of them
    assert all(sorted(abs(v) for v in row.effects.values())[-2] > 0.1 for row in raw)
    rows = name_dimensions(space.model, space.codes, space.scorer, basis=space.rotation, steps=7, n_sources=8)
    check_named(rows, "basis")
    subset = name_dimensions(space.model, space.codes, space.scorer, basis=space.rotation[:3], dims=[1], steps=5)
    assert len(subset) == 1 and subset[0].attribute == "Male"
    with pytest.raises(ValueError, match="orthonormal"):
        name_dimensions(space.model, space.codes, space.scorer, basis=2 * space.rotation[:2])


def test_table_and_figure(tmp_path):
    space = make_space(n=300, dim=5, rotate=False)
    rows = name_dimensions(space.model, space.codes, space.scorer, steps=5, n_sources=4)
    table = naming_table_markdown(rows)
    lines = table.strip().splitlines()
    assert lines[0] == "| dimension | attribute | effect | monotonicity |" and len(lines) == 2 + len(rows)
    assert any(line.startswith("| z[0] | Smiling | +0.") for line in lines)
    path = naming_figure(rows, str(tmp_path / "figs" / "naming.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no rows"):
        naming_figure([], str(tmp_path / "empty.png"))


def test_negative_effects_are_reported_with_their_sign():
    space = make_space(n=300, dim=5, rotate=False)
    space.codes[:, 2] *= -1  # Eyeglasses now grows as z[2] falls
    space.scorer.read.weight.data[2] *= -1
    rows = name_dimensions(space.model, space.codes, space.scorer, dims=[2], steps=5, n_sources=4)
    assert rows[0].attribute == "Eyeglasses" and rows[0].effect < -0.5 and rows[0].monotonicity < -0.99
    assert torch.isfinite(torch.tensor(rows[0].effect))
