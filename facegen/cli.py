"""The ``facegen`` command: ``facegen synth|prepare|train|tune|report|demo ...`` (``facegen CMD --help`` for each).

Each subcommand's arguments and body live next to the code they drive (``add_*_arguments`` / ``run_*``);
this module only wires them up and turns user mistakes into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from facegen.errors import FacegenError

# name -> (module, add-arguments function, run function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "synth": ("facegen.data.synth", "add_synth_arguments", "run_synth",
              "render the synthetic face dataset in CelebA or FairFace layout"),
    "prepare": ("facegen.data.prepare", "add_prepare_arguments", "run_prepare",
                "turn a CelebA/FairFace folder or URI into Parquet shards"),
    "train": ("facegen.training.trainer", "add_train_arguments", "run_train",
              "train a model from a config with Ray Train"),
    "tune": ("facegen.training.tune", "add_tune_arguments", "run_tune",
             "search hyper-parameters with Ray Tune (ASHA), export the best bundle"),
    "edit": ("facegen.client", "add_edit_arguments", "run_edit",
             "send a photo to the editing service (--set Smiling=1.5), write the edited PNG"),
    "report": ("facegen.reporting.report", "add_report_arguments", "run_report",
               "evaluate every bundle in a run folder; write report.md + report.json with pictures"),
    "evaluate": ("facegen.quality.benchmark", "add_evaluate_arguments", "run_evaluate",
                 "quality benchmark of bundles on the test split, judged by an independent classifier (quality.md)"),
    "analyze": ("facegen.analysis.run", "add_analyze_arguments", "run_analyze",
                "latent analysis of a bundle (traversals, named dims, directions, edit metrics); stores directions"),
    "augment": ("facegen.augment.job", "add_augment_arguments", "run_augment",
                "write K attribute-edited variants of every image in a folder (Ray Data), plus a manifest"),
    "demo": ("facegen.demo", "add_demo_arguments", "run_demo",
             "synthesise faces, train the VAE, draw grids (what `make demo` runs)"),
}


def run_guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; a FacegenError (a user mistake) becomes ``error: <one line>`` and exit status 2."""

    try:
        return run(args) or 0
    except FacegenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def job_main(command: str, description: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of a ``jobs/*.py`` script: the same arguments and behaviour as ``facegen <command>``."""
    module, add, run, _ = COMMANDS[command]
    mod = importlib.import_module(module)
    parser = argparse.ArgumentParser(description=description)
    getattr(mod, add)(parser)
    return run_guarded(getattr(mod, run), parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facegen", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runners = {}
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = argv[0] if argv else None
    for name, (module, add, run, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the module that runs: keeps `facegen --help` instant
            mod = importlib.import_module(module)
            getattr(mod, add)(sub_parser)
            runners[name] = getattr(mod, run)
    args = parser.parse_args(argv)
    return run_guarded(runners[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
