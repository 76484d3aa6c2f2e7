"""The command line as a user meets it: --help for every command, one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from facegen.cli import COMMANDS


def facegen(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facegen.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.parametrize("command", ["", *sorted(COMMANDS)])
def test_every_command_has_plain_help_with_an_example(command):
    result = facegen(*[command] * bool(command), "--help")
    assert result.returncode == 0 and "usage: facegen" in result.stdout
    assert "`" not in result.stdout, "help is read in a terminal: no reStructuredText/Markdown markup"
    example = result.stdout.split("example:\n")[-1].strip()
    assert "example:\n" in result.stdout and example.startswith(f"facegen {command}".strip()), result.stdout


@pytest.mark.parametrize("args, message", [
    (["train", "--config", "configs/absent.yaml"], "configs/absent.yaml: config file not found"),
    (["train", "--config", "configs/vae_synth64.yaml", "train.lrr=1"], "train.lrr: unknown key"),
    (["train", "--config", "configs/vae_synth64.yaml", "data.shards=/nonexistent/shards"], "no manifest"),
    (["prepare", "--dataset", "celeba", "--src", "/nonexistent/celeba", "--out", "/tmp/x"], "/nonexistent/celeba"),
    (["tune", "--config", "configs/vae_synth64.yaml", "--num-samples", "0"], "--num-samples must be at least 1"),
    (["report", "/nonexistent/runs"], "no model bundles found"),
    (["serve", "--bundle", "/nonexistent/bundle"], "--bundle /nonexistent/bundle: not a model bundle"),
    (["serve", "--config", "/nonexistent/serve.yaml"], "/nonexistent/serve.yaml: Serve config not found"),
    # refused before it renders a face, not at the step that reads the count
    (["demo", "--out", "/nonexistent/demo", "--guide-epochs", "-1"], "--guide-epochs must be >= 0, got -1"),
    (["demo", "--out", "/nonexistent/demo", "--guide-epochs", "0"], "trains against the guide classifier"),
    (["demo", "--out", "/nonexistent/demo", "--config", "/nonexistent/c.yaml"], "config file not found"),
])
def test_user_mistakes_are_one_line_and_exit_2(args, message, tmp_path):
    result = facegen(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
