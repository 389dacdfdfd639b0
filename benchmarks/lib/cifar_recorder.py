"""The callback the CIFAR suite adds to each of its training runs; Lightning is imported here,
so only the runs pay for it, never the suite process."""

import time
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from benchmarks.lib.report import write_json


class BenchmarkRecorder(Callback):
    """Record what the benchmark needs from inside a training run, as JSON after every epoch.

    Added to a run with ``++callbacks.benchmark_recorder._target_=<this class>
    ++callbacks.benchmark_recorder.path=<file>``. Training throughput counts the images of the
    training batches from the first batch of an epoch to its last (validation excluded).

    :param path: JSON file to (re)write.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.record: dict[str, Any] = {"epochs": [], "test_acc": None}
        self._epoch_start = self._last_batch_end = 0.0
        self._images = 0

    @staticmethod
    def _metric(trainer: Trainer, stage: str) -> float | None:
        """``<stage>/acc`` (single head) or the first ``<stage>/<head>_acc`` (multihead)."""
        metrics = trainer.callback_metrics
        names = [f"{stage}/acc"] + sorted(
            k for k in metrics if k.startswith(f"{stage}/") and k.endswith("_acc")
        )
        return next((float(metrics[n]) for n in names if n in metrics), None)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Parameters, device and batch size, once."""
        device = trainer.strategy.root_device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        if device.type == "cpu":
            name = f"cpu ({torch.get_num_threads()} threads)"
        self.record.update(
            parameters=sum(p.numel() for p in pl_module.parameters()),
            device=name,
            max_epochs=trainer.max_epochs,
        )
        write_json(self.path, self.record, newline=False)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the epoch's clock."""
        self._epoch_start = self._last_batch_end = time.perf_counter()
        self._images = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Count images and remember when the last training batch finished."""
        self._images += len(batch[0])
        self._last_batch_end = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Store the epoch's training time, throughput and validation accuracy."""
        if trainer.sanity_checking or not self._images:
            return
        seconds = self._last_batch_end - self._epoch_start
        self.record["epochs"].append(
            {
                "epoch": trainer.current_epoch,
                "val_acc": self._metric(trainer, "val"),
                "train_time_s": round(seconds, 3),
                "train_images": self._images,
                "images_per_s": round(self._images / seconds, 1) if seconds > 0 else None,
            }
        )
        self._images = 0
        write_json(self.path, self.record, newline=False)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Store the test accuracy (of the best checkpoint: ``train.py`` tests it)."""
        self.record["test_acc"] = self._metric(trainer, "test")
        write_json(self.path, self.record, newline=False)
