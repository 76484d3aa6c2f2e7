"""facegen's own training console: one line per epoch, printed once by the driver from rank 0's metrics.

Ray's output (Train controller and workers, Ray Data, Serve) stays in the Ray session's log files: ``init_ray``
starts Ray with ``log_to_driver=False``. So the driver prints progress itself: ``ForwardMetrics``, a Ray Train
``UserCallback`` that runs on the Train controller, puts rank 0's metrics of every report into a small queue
actor, and a thread of the driver turns each into a line on stderr (stdout keeps a command's result):

    [facegen] vae_demo64  epoch 3/10  train/loss=2482  val/loss=2439  64 img/s  1m05s, ETA 2m30s
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from ray.train import UserCallback
from ray.util.queue import Empty, Queue

from facegen.config import ExperimentConfig

PREFIX = "[facegen]"
SPEED = "train/images_per_s"


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``: short enough for a progress line."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def key_metrics(cfg: ExperimentConfig) -> list[str]:
    """The metrics a line shows: the losses and the metric that picks the best epoch."""
    return list(dict.fromkeys(["train/loss", "val/loss", cfg.train.monitor]))


def epoch_line(name: str, metrics: dict[str, Any], cfg: ExperimentConfig, elapsed: float, eta: float) -> str:
    shown = "  ".join(f"{k}={metrics[k]:.4g}" for k in key_metrics(cfg) if k in metrics)
    speed = f"  {metrics[SPEED]:.0f} img/s" if SPEED in metrics else ""
    return (f"{PREFIX} {name}  epoch {int(metrics['epoch'])}/{cfg.train.epochs}  {shown}{speed}  "
            f"{duration(elapsed)}, ETA {duration(eta)}")


class ForwardMetrics(UserCallback):
    """Runs on the Train controller: hands rank 0's metrics of every report to the driver's queue. Every
    rank reports the same all-reduced numbers, so rank 0's are the run's."""

    def __init__(self, queue: Queue):
        self._queue = queue

    def after_report(self, run_context, metrics, checkpoint):
        self._queue.put(dict(metrics[0]))


class EpochPrinter:
    """``with EpochPrinter(cfg, name) as printer:`` pass ``printer.callback`` to the trainer, then ``fit()``.

    The ETA is the mean epoch time of this fit times the epochs left, measured between reports. The first
    report's wall time is mostly starting Ray Train and Ray Data, so its ETA uses the epoch's training time
    instead (``train_rows`` / images per second; validation is left out).
    """

    def __init__(self, cfg: ExperimentConfig, name: str, train_rows: int | None = None):
        self.cfg, self.name, self.train_rows = cfg, name, train_rows
        self.epochs_seen: list[int] = []
        self._queue: Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = self._first_report = 0.0
        self._first_epoch = 0

    @property
    def callback(self) -> ForwardMetrics:
        assert self._queue is not None, "use EpochPrinter as a context manager"
        return ForwardMetrics(self._queue)

    def __enter__(self) -> "EpochPrinter":
        # num_cpus=0: the queue must never wait for a CPU that the Train workers and Ray Data hold.
        self._queue = Queue(actor_options={"num_cpus": 0})
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._print_until_stopped, name="facegen-epochs", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:  # the last reports may still be queued: fit() returns once the controller has put them
            while True:
                self.show(self._queue.get_nowait())
        except Empty:
            pass
        except Exception:  # Ray already gone (Ctrl-C): nothing left to show
            pass
        try:
            self._queue.shutdown(force=True)
        except Exception:
            pass
        last = self.epochs_seen[-1] if self.epochs_seen else self.cfg.train.epochs
        if exc_type is None and last < self.cfg.train.epochs:  # the loop stops all ranks only for this
            print(f"{PREFIX} {self.name}: early stop after epoch {last}: no better {self.cfg.train.monitor} in "
                  f"{self.cfg.train.early_stopping_patience} epochs", file=sys.stderr, flush=True)

    def _print_until_stopped(self) -> None:
        while not self._stop.is_set():
            try:
                self.show(self._queue.get(timeout=1.0))
            except Empty:
                continue
            except Exception:  # the queue died with Ray (Ctrl-C, shutdown): the fit reports the failure
                return

    def show(self, metrics: dict[str, Any]) -> None:
        now = time.monotonic()
        epoch = int(metrics["epoch"])
        if not self.epochs_seen:
            self._first_report, self._first_epoch = now, epoch
            speed = metrics.get(SPEED) or 0.0
            per_epoch = self.train_rows / speed if self.train_rows and speed > 0 else now - self._started
        else:
            per_epoch = (now - self._first_report) / max(epoch - self._first_epoch, 1)
        self.epochs_seen.append(epoch)
        eta = per_epoch * max(self.cfg.train.epochs - epoch, 0)
        print(epoch_line(self.name, metrics, self.cfg, now - self._started, eta), file=sys.stderr, flush=True)
