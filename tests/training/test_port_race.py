"""Ray Train's rendezvous port race (it frees the port it picked before torch binds it): the start is retried."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import torch.distributed as dist

from facegen.training.trainer import is_port_race, retry_port_race


def torch_bind_error() -> Exception:
    """The error torch raises when the port it was handed is taken, as the workers see it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        try:
            dist.TCPStore("127.0.0.1", taken.getsockname()[1], 1, True, timeout=timedelta(seconds=5))
        except Exception as error:  # noqa: BLE001 - the error itself is what is under test
            return error
    raise AssertionError("torch bound a port that another socket listens on")


def test_torch_bind_error_is_recognised():
    assert is_port_race(torch_bind_error())
    assert not is_port_race(RuntimeError("loss is NaN at step 3"))


def test_a_lost_race_starts_again(capsys):
    error, calls = torch_bind_error(), []

    def fit():
        calls.append(1)
        if len(calls) < 3:
            raise error
        return "result"

    assert retry_port_race(fit, "run", attempts=3) == "result"
    assert len(calls) == 3
    assert capsys.readouterr().err.count("starting again") == 2


def test_other_errors_and_the_last_attempt_propagate():
    calls = []

    def broken():
        calls.append(1)
        raise ValueError("bad config")

    with pytest.raises(ValueError, match="bad config"):
        retry_port_race(broken, "run")
    assert len(calls) == 1

    error = torch_bind_error()

    def always_taken():
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        retry_port_race(always_taken, "run", attempts=2)
    assert len(calls) == 3
