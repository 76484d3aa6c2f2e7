"""ConditionTable: slot edits land on the nearest condition training faces have."""

import pytest
import torch

from facegen.latent.conditions import ConditionTable

NAMES = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Bald", "Smiling")


def _table() -> ConditionTable:
    # Hair colours exclude each other and a bald head has none; brown is the commonest colour. Smiling is
    # independent of the rest (2 blond non-smilers: fewer than chance would give, but not none)
    counts = {(1, 0, 0, 0, 0): 60, (1, 0, 0, 0, 1): 20, (0, 1, 0, 0, 1): 40, (0, 1, 0, 0, 0): 2,
              (0, 0, 1, 0, 0): 100, (0, 0, 1, 0, 1): 80, (0, 0, 0, 1, 0): 40, (0, 0, 0, 1, 1): 20}
    faces = [row for row, n in counts.items() for _ in range(n)]
    return ConditionTable.fit(NAMES, torch.tensor(faces, dtype=torch.float32))


def test_fit_keeps_distinct_rows_with_counts():
    table = _table()
    assert table.rows.shape == (8, 5) and sorted(table.counts.tolist()) == [2, 20, 20, 40, 40, 60, 80, 100]


def test_rules_are_pairs_no_face_has_although_many_would():
    table = _table()
    hair = [NAMES.index(n) for n in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Bald")]
    assert table.constrained(NAMES.index("Black_Hair")) == [h for h in hair if h != 0]
    assert table.constrained(NAMES.index("Smiling")) == []


def test_setting_one_colour_turns_the_other_off_and_keeps_the_rest():
    cond = torch.tensor([[1.0, 0, 0, 0, 1], [0, 0, 1, 0, 0]])
    edited = _table().nearest(cond, {"Blond_Hair": 1})
    # The other colour goes; the smile is no rule of hair colour, so it stays
    assert edited.tolist() == [[0, 1, 0, 0, 1], [0, 1, 0, 0, 0]]


def test_unsetting_a_colour_picks_the_commonest_other_at_equal_distance():
    cond = torch.tensor([[1.0, 0, 0, 0, 0]])
    # Black -> blond, brown or bald: each one change away besides Black_Hair; brown is the commonest
    assert _table().nearest(cond, {"Black_Hair": 0}).tolist() == [[0, 0, 1, 0, 0]]


def test_a_condition_that_exists_is_only_set():
    cond = torch.tensor([[0.0, 0, 1, 0, 0]])
    assert _table().nearest(cond, {"Smiling": 1}).tolist() == [[0, 0, 1, 0, 1]]


def test_several_fixed_entries_and_slider_values_are_kept():
    cond = torch.tensor([[1.0, 0, 0, 0, 0]])
    # Blond and smiling at 0.8 (a slider): the blond smiler, with the slider's value kept
    assert _table().nearest(cond, {"Blond_Hair": 1, "Smiling": 0.8}).tolist() == [[0, 1, 0, 0, pytest.approx(0.8)]]


def test_a_push_past_the_trained_values_follows_the_same_rules():
    cond = torch.tensor([[1.0, 0, 0, 0, 1]])
    # 1.5 is "blond, more so": black goes as for 1; -0.5 is "not black, more so": brown, the commonest other
    assert _table().nearest(cond, {"Blond_Hair": 1.5}).tolist() == [[0, 1.5, 0, 0, 1]]
    assert _table().nearest(cond, {"Black_Hair": -0.5}).tolist() == [[-0.5, 0, 1, 0, 1]]


def test_the_table_travels_in_bundle_extras():
    table = _table()
    back = ConditionTable.from_extras(table.to_extras())
    assert back.names == NAMES and torch.equal(back.rows, table.rows) and torch.equal(back.counts, table.counts)
    assert ConditionTable.from_extras({}) is None


def test_a_value_no_face_has_only_sets_the_entry():
    table = ConditionTable.fit(NAMES[:2], torch.tensor([[1.0, 0], [0, 0]] * 10))
    assert table.nearest(torch.tensor([[1.0, 0]]), {"Blond_Hair": 1}).tolist() == [[1, 1]]


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="do not match"):
        ConditionTable(NAMES, torch.zeros(3, 2), torch.ones(3))
    with pytest.raises(ValueError, match="no training labels"):
        ConditionTable.fit(NAMES, torch.zeros(0, 5))


def test_a_slot_edit_of_the_benchmark_lands_on_a_training_condition():
    from facegen.models import build_model
    from facegen.quality.edits import SlotLever, edit_pairs
    from tests.tiny import tiny_config

    cfg = tiny_config("cvae")
    cfg = type(cfg)(**{**cfg.__dict__, "model": type(cfg.model)(**{**cfg.model.__dict__,
                                                                   "condition_attributes": NAMES})})
    model = build_model(cfg.model).eval()
    cond = torch.tensor([[1.0, 0, 0, 0, 1], [0, 0, 1, 0, 0]])
    codes = torch.cat([torch.randn(2, cfg.model.latent_dim), cond], 1)
    targets = torch.tensor([1, 1])
    edited = edit_pairs(model, codes, targets, "Blond_Hair", "slot", SlotLever(_table()))
    assert torch.equal(edited[:, :cfg.model.latent_dim], codes[:, :cfg.model.latent_dim])  # z untouched
    assert edited[:, cfg.model.latent_dim:].tolist() == [[0, 1, 0, 0, 1], [0, 1, 0, 0, 0]]
    plain = edit_pairs(model, codes, targets, "Blond_Hair", "slot", SlotLever())  # no table: the entry alone
    assert plain[:, cfg.model.latent_dim:].tolist() == [[1, 1, 0, 0, 1], [0, 1, 1, 0, 0]]
    # Pushed: the entry goes past its value, the rules move the rest as before; toward 0 it goes below 0
    pushed = edit_pairs(model, codes, torch.tensor([1, 0]), "Blond_Hair", "slot", SlotLever(_table(), 0.25))
    assert pushed[:, cfg.model.latent_dim:].tolist() == [[0, 1.25, 0, 0, 1], [0, -0.25, 1, 0, 0]]
