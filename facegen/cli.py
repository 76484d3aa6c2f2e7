"""The facegen command: facegen COMMAND [options]; facegen COMMAND --help describes each command.

Each subcommand's arguments and body live next to the code they drive (``add_*_arguments`` / ``run_*``);
this module only wires them up and turns user mistakes into one line on stderr and exit status 2.
Help texts are plain text (no markup) and every command's ends with an example.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, NamedTuple, Sequence

from facegen.errors import FacegenError


class Command(NamedTuple):
    module: str
    """Where the command lives; a module outside ``facegen`` (``serve.launch``) is imported from the working
    directory, the repository root, as ``serve run`` imports an app."""
    add: str
    """Name of the function that adds the command's arguments to a parser."""
    run: str
    """Name of the function that runs the command on the parsed arguments."""
    help: str
    """One line for ``facegen --help`` (plain text)."""
    example: str
    """One typical command line, shown at the end of the command's --help."""


COMMANDS: dict[str, Command] = {
    "synth": Command("facegen.data.synth", "add_synth_arguments", "run_synth",
                     "render the synthetic face dataset in CelebA or FairFace layout",
                     "facegen synth --out out/synth --n 2000 --layout celeba"),
    "prepare": Command("facegen.data.prepare", "add_prepare_arguments", "run_prepare",
                       "turn a CelebA/FairFace folder or URI into Parquet shards",
                       "facegen prepare --dataset celeba --src out/synth --out out/shards64 --resolution 64"),
    "train": Command("facegen.training.trainer", "add_train_arguments", "run_train",
                     "train a model from a config with Ray Train",
                     "facegen train --config configs/vae_synth64.yaml data.shards=out/shards64 train.epochs=5"),
    "tune": Command("facegen.training.tune", "add_tune_arguments", "run_tune",
                    "search hyper-parameters with Ray Tune (ASHA), export the best bundle",
                    "facegen tune --config configs/vae_synth64.yaml --num-samples 8"),
    "serve": Command("serve.launch", "add_serve_arguments", "run_serve",
                     "serve a bundle (web page + HTTP API) from serve/config.yaml until Ctrl-C",
                     "facegen serve --bundle out/demo/runs/cvae_edit_demo64/bundle "
                     "--classifier out/demo/runs/classifier_synth64/bundle --port 8000"),
    "edit": Command("facegen.client", "add_edit_arguments", "run_edit",
                    "send a photo to the editing service (--set Smiling=1.5), write the edited PNG",
                    "facegen edit photo.jpg --set Smiling=1.5 --url http://127.0.0.1:8000 -o edited.png"),
    "report": Command("facegen.reporting.report", "add_report_arguments", "run_report",
                      "evaluate every bundle in a run folder; write report.md + report.json with pictures",
                      "facegen report out/demo/runs"),
    "evaluate": Command("facegen.quality.command", "add_evaluate_arguments", "run_evaluate",
                        "quality benchmark of bundles on the test split, judged by an independent classifier "
                        "(quality.md)",
                        "facegen evaluate --runs out/demo/runs --judge out/demo/runs/classifier_synth64/bundle"),
    "analyze": Command("facegen.analysis.run", "add_analyze_arguments", "run_analyze",
                       "latent analysis of a bundle (traversals, named dims, directions, edit metrics); "
                       "stores directions",
                       "facegen analyze --bundle out/demo/runs/cvae_edit_demo64/bundle "
                       "--classifier out/demo/runs/classifier_synth64/bundle"),
    "augment": Command("facegen.augment.job", "add_augment_arguments", "run_augment",
                       "write K attribute-edited variants of every image in a folder (Ray Data), plus a manifest",
                       "facegen augment --bundle out/demo/runs/vae_demo64/bundle --images photos/ "
                       "--out out/augmented --edits Smiling:+1 --variants 3"),
    "demo": Command("facegen.demo", "add_demo_arguments", "run_demo",
                    "synthesise faces, train two classifiers and the conditional editor, draw grids, analyse and "
                    "benchmark it (what make demo runs before serving)",
                    "facegen demo --out out/demo --n 3000"),
}


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's own wrapping, except for the closing example, which stays one line to copy and paste."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example:"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def _example(command: str, runner: str | None = None) -> str:
    """The command's example; ``runner`` replaces ``facegen COMMAND`` (a jobs/ script shows itself)."""
    example = COMMANDS[command].example
    return f"example:\n  {example.replace(f'facegen {command}', runner, 1) if runner else example}"


def _import(module: str):
    """Import a command's module; one outside the package (``serve``) only exists in the repository root."""
    if not module.startswith("facegen.") and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0]:
            raise
        raise FacegenError(f"no {exc.name}/ package here: run this command from the facegen repository root")


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
    spec = COMMANDS[command]
    mod = importlib.import_module(spec.module)
    runner = f"python jobs/{os.path.basename(sys.argv[0])}"
    parser = argparse.ArgumentParser(description=description.replace("``", ""), epilog=_example(command, runner),
                                     formatter_class=_HelpFormatter)
    getattr(mod, spec.add)(parser)
    return run_guarded(getattr(mod, spec.run), parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facegen", description=__doc__.splitlines()[0],
                                     epilog=_example("train"), formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runners = {}
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = argv[0] if argv else None
    for name, spec in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=spec.help, description=spec.help, epilog=_example(name),
                                    formatter_class=_HelpFormatter)
        if name == chosen:  # import only the module that runs: keeps `facegen --help` instant
            try:
                mod = _import(spec.module)
            except FacegenError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            getattr(mod, spec.add)(sub_parser)
            runners[name] = getattr(mod, spec.run)
    args = parser.parse_args(argv)
    return run_guarded(runners[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
