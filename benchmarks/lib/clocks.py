"""Lightning callbacks that time training, and a Trainer with nothing else attached."""

import time
from typing import Any

import lightning as L
import torch
from lightning import Callback

from benchmarks.lib.timing import synchronize


def bare_trainer(**kwargs: Any) -> L.Trainer:
    """A ``Trainer`` without logger, checkpointing, progress bar or model summary (``kwargs``
    add to or replace these)."""
    settings: dict[str, Any] = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**settings, **kwargs})


def accelerator(device: torch.device) -> str:
    """Lightning's accelerator name for a torch device."""
    return "gpu" if device.type == "cuda" else "cpu"


class StepClock(Callback):
    """Start the clock after ``warmup`` batches, count the images after it; stop at the end."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device, self.batches, self.images = warmup, device, 0, 0
        self.start = self.stop = 0.0

    def on_train_batch_end(self, trainer: Any, module: Any, out: Any, batch: Any, i: int) -> None:
        """Count the batch; the clock starts when the warm-up ends."""
        self.batches += 1
        if self.batches == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()
        elif self.batches > self.warmup:
            self.images += len(batch[0])

    def on_train_end(self, trainer: Any, module: Any) -> None:
        """Stop the clock."""
        synchronize(self.device)
        self.stop = time.perf_counter()

    @property
    def images_per_s(self) -> float:
        """Images per second between the end of the warm-up and the end of training."""
        return self.images / max(self.stop - self.start, 1e-9)


class AccuracyClock(Callback):
    """Training time (evaluation excluded) until ``val/acc`` first reaches ``target``, when
    training stops; ``history`` holds ``(seconds, accuracy)`` per evaluation."""

    def __init__(self, target: float | None, device: torch.device) -> None:
        self.target, self.device = target, device
        self.start = self.eval_started = 0.0
        self.eval_seconds, self.history = 0.0, []

    def on_train_start(self, trainer: Any, module: Any) -> None:
        """Start the clock."""
        self.start = time.perf_counter()

    def on_validation_start(self, trainer: Any, module: Any) -> None:
        """Evaluation time is not training time."""
        synchronize(self.device)
        self.eval_started = time.perf_counter()

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        """Record the accuracy; stop when it reaches the target."""
        now = time.perf_counter()
        self.eval_seconds += now - self.eval_started
        acc = float(trainer.callback_metrics["val/acc"])
        self.history.append((now - self.start - self.eval_seconds, acc))
        if self.target is not None and acc >= self.target:
            trainer.should_stop = True


class TrainStepTimer(Callback):
    """Sum the wall time of training steps (forward, backward, optimizer) and count images."""

    def __init__(self) -> None:
        self.seconds, self.images, self.start = 0.0, 0, 0.0

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
        """Start the step's clock."""
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, module: Any, out: Any, batch: Any, idx: int) -> None:
        """Add the step's time and images."""
        self.seconds += time.perf_counter() - self.start
        self.images += len(batch[0])


class EpochClock(Callback):
    """Seconds of each training epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.start = 0.0

    def on_train_epoch_start(self, *args: Any) -> None:
        """Start the epoch's clock."""
        self.start = time.perf_counter()

    def on_train_epoch_end(self, *args: Any) -> None:
        """Record the epoch's time."""
        self.seconds.append(time.perf_counter() - self.start)
