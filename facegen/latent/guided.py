"""Classifier-guided edits: a few gradient steps on the codes that make a guidance classifier read the target
attribute, while its reading of the other attributes and the distance from the start stay put.

Where a direction edit moves every face by the same vector, guidance moves each face as far as *that* face
needs, along whatever path the decoder and the guide agree on. Per face, in the whitened offset
``u = (z - z0) / scale`` (``scale`` (D,): the training codes' standard deviation per dimension, so one unit means
what it means for :mod:`facegen.latent.edit`'s strength), descend

    loss = -s * logit_t(decode(z))                                      push the target
         + keep_weight * mean_j BCE(logit_j(decode(z)), p_j(decode(z0)))   hold every other attribute's reading
         + prox_weight * mean(u ** 2)                                  stay near the start

with ``s = +1`` toward present and ``-1`` toward absent, by steps of a fixed length ``lr`` (the gradient
normalised per face, so the step means the same whatever the guide's logit scale). A face stops moving once the
guide reads the target past ``margin``, so each face moves only as far as it needs; ``steps * lr`` bounds the
distance. Only ``u`` gets gradients (``torch.autograd.grad``): the decoder and the guide are read, never changed. The guide must not be the judge that scores the edits
(:mod:`facegen.quality.judge` keeps them apart); the benchmark's guide is an ordinary attribute classifier bundle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from facegen.errors import FacegenError
from facegen.latent.edit import MAX_STRENGTH, edit_codes, latent_slots
from facegen.precision import bf16_autocast

GUIDED = "guided"


@dataclass(frozen=True)
class Guidance:
    """How hard and how long a guided edit pushes."""

    steps: int = 40
    """Steps on the codes at most (the whole batch at once); ``steps * lr`` bounds how far a face moves."""
    lr: float = 0.25
    """Length of one step, in standard deviations of the codes (whitened units)."""
    margin: float = 0.98
    """Target probability at which a face stops moving (toward absent: 1 - margin). The judge is another
    network, so the guide must be surer than 0.5: bench/guided_edits.py, 8 attributes x 32 counterfactual pairs,
    judge flip 0.88 / 0.97 / 1.00 at margin 0.9 / 0.98 / 0.995, drift of the others 0.07 / 0.08 / 0.09."""
    keep_weight: float = 16.0
    """Weight of holding the other attributes' readings at their start values. bench/guided_edits.py, margin
    0.98: on the 40-epoch VAE (8 attributes) 4 vs 1 gave drift 0.078 vs 0.085 at the same flip rate within 0.01;
    on the demo VAE (21 attributes x 32 pairs) 4 / 8 / 16 / 32 gave flip 0.909 / 0.905 / 0.900 / 0.872, drift
    0.082 / 0.073 / 0.064 / 0.055, and 3 / 3 / 5 / 5 attributes at flip >= 0.9 with drift <= 0.05."""
    prox_weight: float = 0.02
    """Weight of the squared whitened distance from the start codes."""
    noise: float = 0.1
    """Standard deviation (in [-1, 1] pixel units) of Gaussian noise added to the decoded images before the
    guide reads them, ``copies`` draws averaged, at every step and for the stopping test (0: the guide reads the
    decode as it is). Plain steps find what moves *this* guide's logit, which another classifier need not read
    (on the demo VAE with an accurate guide: guide past 0.98 on 97% of faces, judge flip 0.38-0.66 for
    Gray_Hair / Blond_Hair / Rosy_Cheeks); averaging over noise keeps the steps on what survives it (expectation
    over transformation, Athalye et al. 2018). bench/guided_edits.py, 21 attributes x 32 pairs, judge and guide
    on 16,000 faces, noise 0 / 0.1: demo VAE flip 0.80 / 0.90, drift 0.041 / 0.052, 4 / 4 attributes meeting
    the editing target; perceptual AE (120,000 images) 0.77 / 0.88, 0.034 / 0.041, 3 / 7."""
    copies: int = 2
    """Noise draws averaged per step when ``noise`` > 0."""
    bf16: bool = True
    """Decode and read under bf16 autocast where the device does bf16 natively (CUDA; a CPU with AVX512-BF16 or
    AMX; elsewhere fp32): the steps only choose a path, the codes stay fp32 and are decoded and judged in fp32.
    On 2 cores, the demo's models: the steps 1.6-2.3x faster, `facegen evaluate` on the demo VAE 1.26x; the same
    judged edits to within one face in 32 (README "Guided edits")."""

    def __post_init__(self) -> None:
        if self.steps < 1 or not self.lr > 0 or not 0.5 < self.margin < 1:
            raise ValueError(f"guidance needs steps >= 1, lr > 0 and 0.5 < margin < 1, got {self}")
        if self.keep_weight < 0 or self.prox_weight < 0 or self.noise < 0 or self.copies < 1:
            raise ValueError(f"guidance weights and noise must be >= 0 and copies >= 1, got {self}")

    def autocast(self, device: torch.device):
        """The context the decoder and the guide run in: bf16 autocast when ``bf16`` and the device has it."""
        return bf16_autocast(device, cuda=self.bf16, cpu=self.bf16)

    def reader(self, guide: "Guide", seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
        """images -> the guide's logits as guidance reads them: plain, or averaged over ``copies`` noisy copies
        (draws from a generator seeded with ``seed``, so an edit is repeatable; one draw serves every image of
        the batch, so a face's edit does not depend on which others share its batch)."""
        if self.noise == 0:
            return guide.logits
        draws = torch.Generator().manual_seed(seed)

        def read(images: torch.Tensor) -> torch.Tensor:
            noise = torch.randn((self.copies, 1, *images.shape[1:]), generator=draws).to(images)  # (K, 1, C, H, W)
            return torch.stack([guide.logits(images + self.noise * n) for n in noise]).mean(0)
        return read


class Guide:
    """A differentiable attribute reader for guidance: a classifier with ``logits(images)`` (N, A) and
    ``attribute_names``, fed images resized to its ``resolution``."""

    def __init__(self, model: torch.nn.Module, resolution: int, location: str = "") -> None:
        self.model, self.resolution, self.location = model.eval(), resolution, location

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(self.model.attribute_names)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) in [-1, 1] -> logits (N, A), differentiable in the images."""
        if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution:
            images = F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear",
                                   align_corners=False)
        return self.model.logits(images)


def guided_codes(decode: Callable[[torch.Tensor], torch.Tensor], guide: Guide, codes: torch.Tensor,
                 attribute: str, targets: torch.Tensor, scale: torch.Tensor,
                 keep: Sequence[str] | None = None, guidance: Guidance = Guidance()) -> torch.Tensor:
    """Codes (N, D) moved so that ``guide`` reads ``attribute`` as ``targets`` (N,) (0 or 1 per face).

    keep: the attributes whose readings are held (default: every other attribute the guide knows).
    scale: (D,) the codes' standard deviation per dimension (the unit of a step).
    """
    names = list(guide.attribute_names)
    if attribute not in names:
        raise ValueError(f"the guide does not read {attribute!r} (it reads: {', '.join(names)})")
    column = names.index(attribute)
    held = [names.index(n) for n in (keep if keep is not None else names) if n != attribute]
    scale = scale.to(codes).clamp(min=1e-6)  # (D,)
    sign = targets.to(codes) * 2 - 1  # (N,) +1 toward present, -1 toward absent
    threshold = math.log(guidance.margin / (1 - guidance.margin))
    read = guidance.reader(guide)
    with torch.no_grad(), guidance.autocast(codes.device):
        start = torch.sigmoid(read(decode(codes))[:, held].float())  # (N, K) readings to hold
    u = torch.zeros_like(codes, requires_grad=True)  # (N, D) whitened offset from the start
    # Every face is decoded at every step until all are done. Decoding only the faces still moving was measured
    # (demo editor, 2 cores): smaller batches cost more per face, so it saved 0-25%, and a face then stops for
    # good on one lucky noise draw (judge flip 0.943 -> 0.914 composed in pixels).
    for _ in range(guidance.steps):
        with torch.enable_grad():  # callers evaluate under no_grad; this loop needs the graph to the codes
            with guidance.autocast(codes.device):
                logits = read(decode(codes + u * scale)).float()  # (N, A)
            reached = sign * logits[:, column].detach() >= threshold  # (N,) these faces stop moving
            if reached.all():
                break
            hold = (F.binary_cross_entropy_with_logits(logits[:, held], start, reduction="none").mean(1)
                    if held else torch.zeros_like(sign))
            loss = -sign * logits[:, column] + guidance.keep_weight * hold + guidance.prox_weight * u.pow(2).mean(1)
            (grad,) = torch.autograd.grad(loss.sum(), [u])  # only the codes move: no parameter sees a gradient
        with torch.no_grad():
            step = grad / grad.norm(dim=1, keepdim=True).clamp(min=1e-12)  # (N, D) unit length per face
            u -= guidance.lr * step * (~reached).unsqueeze(1).to(u)
    return (codes + u.detach() * scale).detach()


def check_guided_edits(guide_attributes: Sequence[str], edits: Mapping[str, float], slots: Sequence[str] = ()) -> None:
    """Refuse, before any compute, a guided edit the guide cannot steer: an attribute it does not read, or a
    strength outside 0 < |s| <= MAX_STRENGTH (its sign is the target, its size the farthest move). Latent slots
    (``slots``) are set as usual and pass. ValueError naming the culprit."""
    for name, strength in edits.items():
        if name in slots:
            continue
        if name not in guide_attributes:
            raise ValueError(f"the guide does not read {name!r} (it reads: {', '.join(guide_attributes)})")
        if not 0 < abs(strength) <= MAX_STRENGTH:
            raise ValueError(f"{name}: a guided edit needs 0 < |strength| <= {MAX_STRENGTH:g} (its sign is the "
                             f"target, its size the farthest move in standard deviations), got {strength:g}")


def guided_edit(model, guide: Guide, codes: torch.Tensor, edits: Mapping[str, float], scale: torch.Tensor,
                guidance: Guidance = Guidance(), decode: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> torch.Tensor:
    """Codes (N, D) with ``edits`` {attribute: strength} applied by guidance: the strength's sign is the target
    (present when positive), ``|strength|`` standard deviations of the codes the farthest a face moves
    (``round(|s| / lr)`` steps), so a strength keeps the unit it has for a direction edit, as a bound rather than
    the move itself. Several attributes are steered one after the other, each holding the guide's reading of all
    the others; the model's latent slots are set as usual. ``model``: a latent model (``decode``, slots);
    ``decode``: the picture guidance steers (default ``model.decode``; :func:`facegen.latent.edit.residual_decoder`
    for an edit composed in pixels)."""
    slots = latent_slots(model)
    slot_edits = {n: s for n, s in edits.items() if n in slots}
    edited = edit_codes(model, codes, slot_edits) if slot_edits else codes.clone()
    for name, strength in edits.items():
        steps = round(abs(strength) / guidance.lr)
        if name in slots or steps < 1:
            continue
        targets = torch.full((codes.shape[0],), float(strength > 0))
        edited = guided_codes(decode or model.decode, guide, edited, name, targets, scale,
                              guidance=replace(guidance, steps=steps))
    return edited


def code_scale(codes: torch.Tensor) -> torch.Tensor:
    """(D,) the standard deviation of codes (N, D) per dimension: guidance's unit of step."""
    return codes.float().std(0, unbiased=True) if codes.shape[0] > 1 else torch.ones(codes.shape[1])


def guide_from_bundle(location: str, map_location: str | torch.device = "cpu") -> Guide:
    """The attribute classifier bundle at ``location`` as a differentiable guide; FacegenError when it is not
    one (logits over named attributes)."""
    from facegen.bundle import load_bundle  # only here: the rest of this module is pure tensor math
    from facegen.latent.scoring import AttributeScorer

    bundle = load_bundle(location, map_location=map_location)
    model = bundle.model
    if not isinstance(model, AttributeScorer) or not callable(getattr(model, "logits", None)):
        raise FacegenError(f"--guide {location}: needs an attribute classifier bundle (logits over named "
                           f"attributes), got a {bundle.config.family!r} bundle")
    return Guide(model, int(bundle.config.model.resolution), location)
