"""Named dimensions as dials: edit a face by setting only the latent dimension trained to carry an attribute
(a VAE's ``model.attribute_dims``), scored against the renderer's counterfactuals as ``facegen evaluate``
scores every method (flip rate and drift by the judge, fidelity PSNR against the counterfactual).

    python bench/named_edits.py --bundle out/s6/runs/vae_named_synth64/bundle \\
        --judge out/demo/runs/classifier_synth64/bundle --shards out/demo/shards64 \\
        --counterfactuals out/demo/counterfactuals [--n 64] [--reach 1.0,1.5]

The dimension of the edited attribute is set to the mean code of the training faces that have the target
value (``reach`` 1), or past it (``reach`` r: the absent class's mean plus r times the gap between the class
means, signed toward the target); every other dimension keeps the face's own code. Per reach it prints each
attribute's row and the count of attributes meeting issue 12's editing target: flip >= 0.9, drift <= 0.05,
fidelity within 2 dB of the reconstruction's PSNR.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from facegen.attributes import CELEBA_ATTRIBUTES  # noqa: E402
from facegen.bundle import load_bundle  # noqa: E402
from facegen.data.pipeline import read_examples  # noqa: E402
from facegen.data.shards import read_manifest  # noqa: E402
from facegen.latent.scoring import batched  # noqa: E402
from facegen.quality.edits import score_edits  # noqa: E402
from facegen.quality.pairs import counterfactual_attributes, read_pairs  # noqa: E402
from facegen.quality.judge import load_judge  # noqa: E402
from facegen.quality.sections import judge_reading  # noqa: E402
from facegen.quality.editing import meets_editing_target as meets_target  # noqa: E402


def class_means(model, shards: str, n: int) -> dict[str, tuple[float, float]]:
    """Attribute -> (mean code of its named dimension over training faces without it, with it)."""
    train = read_examples(read_manifest(shards), "train", n)
    codes = batched(model.encode, train["image"])
    means = {}
    for name, dim in model.attribute_dimensions().items():
        label = train["attrs"][:, CELEBA_ATTRIBUTES.index(name)] > 0.5
        means[name] = (float(codes[~label, dim].mean()), float(codes[label, dim].mean()))
    return means


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="a VAE bundle trained with model.attribute_dims")
    parser.add_argument("--judge", required=True, help="an attribute classifier no model trained against")
    parser.add_argument("--shards", required=True)
    parser.add_argument("--counterfactuals", required=True)
    parser.add_argument("--n", type=int, default=64, help="counterfactual pairs per attribute")
    parser.add_argument("--train-n", type=int, default=2400, help="training faces for the class means")
    parser.add_argument("--reach", default="1.0,1.5", help="comma-separated reaches (see above)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = load_bundle(args.bundle).model.eval()
    if not getattr(model, "attribute_dimensions", lambda: {})():
        print(f"error: {args.bundle} has no named dimensions (model.attribute_dims)", file=sys.stderr)
        return 2
    judge = load_judge(args.judge)
    means = class_means(model, args.shards, args.train_n)
    dims = model.attribute_dimensions()
    attributes = [a for a in counterfactual_attributes(args.counterfactuals) if a in dims]
    names = [a for a in judge.attribute_names if a in dims]
    print(f"{'reach':>6} {'attribute':<20}{'flip':>6}{'drift':>7}{'fid dB':>8}{'recon dB':>9}  target")
    for reach in (float(r) for r in args.reach.split(",")):
        met = []
        for attribute in attributes:
            pairs = read_pairs(args.counterfactuals, attribute, args.n)
            codes = batched(model.encode, pairs.originals)
            recon = batched(model.decode, codes)
            absent, present = means[attribute]
            gap = present - absent
            edited = codes.clone()
            edited[:, dims[attribute]] = torch.where(pairs.targets == 1, absent + reach * gap, present - reach * gap)
            labels = pairs.attrs_original[:, [CELEBA_ATTRIBUTES.index(a) for a in names]]
            row = score_edits(judge, names, attribute, pairs.originals, recon, batched(model.decode, edited),
                              pairs.counterfactuals, labels, pairs.targets, judge_reading(judge, recon, names),
                              held=pairs.held(names))
            if meets_target(row):
                met.append(attribute)
            print(f"{reach:>6g} {attribute:<20}{row['flip_rate']:>6.2f}{row['drift']:>7.3f}"
                  f"{row['fidelity_psnr']:>8.2f}{row['recon_psnr']:>9.2f}  {'yes' if meets_target(row) else ''}",
                  flush=True)
        print(f"reach {reach:g}: {len(met)} of {len(attributes)} attributes meet flip >= 0.9, drift <= 0.05 and "
              f"fidelity within 2 dB: {', '.join(met) or 'none'}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
