"""A guide classifier in augmentation: guided variants (``--method guided``) and labels that follow what the guide
sees change (``--relabel``).

**Guided variants.** Variant k of a direction edit ``{attr: s}`` runs :func:`facegen.latent.guided.guided_codes`
toward ``attr`` present (s > 0) or absent (s < 0), for at most ``|s| * k / K`` standard deviations of the codes
(``steps = round(|s| * k / K / lr)``): the strength keeps its unit and its ladder, as a bound on the move rather
than the move itself, and a face that already reads as the target barely moves. Several attributes are edited
one after the other, each holding the guide's reading of all the others. Latent slots are set as usual.

**Relabelling.** A direction edit does not always flip its attribute (17% of ``mean_diff`` edits did not, by the
judge) and it drags others along; labelled by the edit's sign, such variants teach the classifier wrong
labels. With ``--relabel`` the guide reads the source's reconstruction and the variant: an edited attribute
gets its target label only where the guide reads the variant as the target (else it keeps the source's
label: the edit failed), and any other attribute whose reading crossed 0.5 between the reconstruction and the
variant gets the guide's reading of the variant (drift the guide saw); everything else keeps the source's
label. The true labels stay the reference; the guide only says what changed. (Toggling the source label on a
crossing instead was worse: a guide that misreads a blurry reconstruction then inverts correct labels; judge
agreement of guided edits' labels 0.77 against 0.96 by the edit's sign, bench/augment_gain.py labels.)

The guide is an attribute classifier bundle; it must not be the classifier that later evaluates the
augmented data's effect (nothing here can check that: the caller's responsibility, said in ``--help``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facegen.errors import FacegenError
from facegen.latent.guided import GUIDED, Guidance, Guide, check_guided_edits, code_scale, guided_edit
from facegen.latent.scoring import batched

# Margin 0.98, steps of 0.25 std, keep weight 4: the setting bench/augment_gain.py's figures were measured with
# (the edit default is now 16, which drifts less; augmentation has not been re-measured with it).
GUIDANCE = Guidance(keep_weight=4.0, noise=0.0)  # as augmentation's gains were measured


def check_guided(guide: Guide, edits: dict[str, float], slots, method: str) -> None:
    """Refuse, before Ray starts, a guided edit of an attribute the guide does not read."""
    if method != GUIDED:
        return
    try:
        check_guided_edits(guide.attribute_names, edits, list(slots))
    except ValueError as exc:
        raise FacegenError(f"--method guided (guide {guide.location}): {exc}") from None


def training_code_scale(model, batch: dict) -> torch.Tensor:
    """(D,) spread of the model's codes over a batch of training rows: the unit of a guided step."""
    cond = model.condition_of(batch)
    return code_scale(batched(model.encode, batch["image"], 256, cond))


@dataclass
class GuidedEditor:
    """Guided variants and guide readings for one actor. scale: (D,) the training codes' spread."""

    guide: Guide
    scale: torch.Tensor

    def edit(self, model, codes: torch.Tensor, edits: dict[str, float]) -> torch.Tensor:
        """Codes (N, D) moved by a guided variant's ``edits`` (module docstring)."""
        return guided_edit(model, self.guide, codes, edits, self.scale, GUIDANCE)

    @torch.no_grad()
    def readings(self, images: torch.Tensor) -> torch.Tensor:
        """P(attribute) (N, A) by the guide, in ``guide.attribute_names`` order."""
        return torch.sigmoid(self.guide.logits(images))

    def relabels(self, before: torch.Tensor, after: torch.Tensor, targets: dict[str, int]) -> list[dict[str, int]]:
        """Per image, ``{attribute: label}`` that replace the source's labels (module docstring). before, after:
        the guide's readings (N, A) of the reconstructions and the variants; targets: the edited attributes'."""
        names = self.guide.attribute_names
        present_before, present_after = (before >= 0.5).tolist(), (after >= 0.5).tolist()
        out = []
        for was, now in zip(present_before, present_after):
            row = {}
            for name, b, a in zip(names, was, now):
                if name in targets:
                    if a == bool(targets[name]):  # the guide confirms the edit
                        row[name] = targets[name]
                elif a != b:  # drift the guide saw
                    row[name] = int(a)
            out.append(row)
        return out
