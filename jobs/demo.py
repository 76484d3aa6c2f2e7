"""The whole demo, what ``make demo`` runs: ``facegen demo`` (synthetic faces, Ray Train, pictures, report,
latent analysis and benchmark of the conditional editor), then the Ray Serve app on 127.0.0.1 with one edit over
HTTP, kept up until Ctrl-C when run from a terminal (``--no-wait`` exits).

    python jobs/demo.py --out out/demo [--config configs/vae_demo64.yaml]
"""

import argparse
import sys
import time

import _bootstrap  # noqa: F401  (puts the repository on sys.path)

from facegen.cli import run_guarded
from facegen.data.shards import read_manifest
from facegen.quality.pairs import counterfactual_attributes
from facegen.demo import CONDITION_PUSH, add_demo_arguments, build_demo, print_summary, write_metrics
from serve.demo import best_edit_attribute, serve_and_edit, visible_reliable_edit
from serve.launch import stop_serving, wait_for_ctrl_c


def run(args: argparse.Namespace) -> int:
    metrics = build_demo(args)
    counterfactuals = f"{metrics['out']}/counterfactuals"  # the renderer's truth, written by the benchmark step
    among = counterfactual_attributes(counterfactuals)
    started = time.perf_counter()
    serve = serve_editor if metrics["conditional"] else serve_vae
    metrics["served_edit"] = served = serve(metrics, args.port, counterfactuals, among)
    metrics["timings_s"]["serve_s"] = time.perf_counter() - started
    write_metrics(metrics)
    print_summary(metrics)
    if args.no_wait or not sys.stdin.isatty():
        stop_serving()
        return 0
    print(f"\nOpen {served['url']}/ to edit a face in your browser (API docs: {served['url']}/docs). "
          "Ctrl-C stops the server.", flush=True)
    wait_for_ctrl_c()
    stop_serving()
    return 0


def serve_editor(metrics: dict, port: int, counterfactuals: str, among: list[str]) -> dict:
    """The conditional editor served, its condition slots the page's sliders; the demo edit sets one entry to
    1 + CONDITION_PUSH on faces lacking the attribute: the most visible of the edits its benchmark measured to work."""
    attribute = visible_reliable_edit(metrics["quality"]["json"], among=among) or "Eyeglasses"
    strength = 1 + CONDITION_PUSH
    print(f"\n==> serving the conditional editor and the classifier with Ray Serve on 127.0.0.1:{port}: {attribute} "
          f"condition {strength:g} (the most visible edit its benchmark measured to work), on held-out faces",
          flush=True)
    return serve_and_edit(metrics["bundle"], metrics["classifier_bundle"], read_manifest(metrics["shards"]),
                          metrics["out"], port, attribute, strength=strength, counterfactuals=counterfactuals,
                          label="condition")


def serve_vae(metrics: dict, port: int, counterfactuals: str, among: list[str]) -> dict:
    """An unconditional model served (``--config configs/vae_demo64.yaml``): guided edits when there is a guide,
    else mean differences."""
    attribute = best_edit_attribute(metrics["analysis_json"], among=among)
    guide = metrics.get("guide_bundle")
    # A guided edit's strength bounds its move (it stops once the guide reads the attribute). On the demo VAE's
    # counterfactual faces (bench/guided_edits.py, 8 attributes, keep weight 16) at most 4 / 6 / 10 standard
    # deviations flipped 83 / 86 / 88% of them (Black_Hair 84 / 97 / 97%), with the same drift.
    strength = 6.0 if guide else 2.0
    how = "guided by the guide classifier" if guide else "along its mean-difference direction"
    print(f"\n==> serving the {metrics['family']} and the classifier with Ray Serve on 127.0.0.1:{port}: {attribute} "
          f"+{strength:g}, {how} (the attribute the analysis measured to edit best), on held-out faces", flush=True)
    return serve_and_edit(metrics["bundle"], metrics["classifier_bundle"], read_manifest(metrics["shards"]),
                          metrics["out"], port, attribute, strength=strength, counterfactuals=counterfactuals,
                          guide=guide)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()).replace("``", ""))
    add_demo_arguments(parser)
    parser.add_argument("--port", type=int, default=8000, help="port of the web page on 127.0.0.1 (default 8000)")
    parser.add_argument("--no-wait", action="store_true",
                        help="stop serving right after the demo edit (default: keep serving until Ctrl-C "
                             "when run from a terminal)")
    return run_guarded(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
