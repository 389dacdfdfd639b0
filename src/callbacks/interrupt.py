"""Ctrl-C and SIGTERM stop training at the next batch end with an exactly resumable checkpoint.

Without this, Ctrl-C raised ``KeyboardInterrupt`` in the middle of a step (Lightning then
exits with ``sys.exit(1)``) and SIGTERM stopped the run without a checkpoint: only the last
periodic checkpoint survived. Here the first signal is only recorded; at the end of the current
training batch, the point where periodic step checkpoints are saved, the run's ``last.ckpt``
is written (atomically, by the checkpoint callback's IO) and :class:`RunInterrupted` ends the
run with exit code ``128 + signal`` (130 for SIGINT, 143 for SIGTERM). A second signal stops at
once, as before. A signal during validation or testing takes effect at the next training batch,
or when fitting ends.
"""

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from src.utils import RankedLogger
from src.utils.utils import RunInterrupted

log = RankedLogger(__name__, rank_zero_only=True)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InterruptCheckpoint(Callback):
    """Save ``last.ckpt`` and stop cleanly on the first SIGINT/SIGTERM during ``trainer.fit``."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # asked twice: stop now, without a checkpoint
            self._restore_handlers()
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            f"Received {signal.Signals(signum).name}: saving a checkpoint at the end of this "
            "batch, then stopping (send it again to stop at once)."
        )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Install the handlers (after Lightning's own SIGTERM handler, which they replace)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self.signum = None
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        """Save and stop when a signal arrived during this batch."""
        if self.signum is not None:
            self._stop(trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """A signal during the last validation: fitting is done, so stop before testing."""
        self._restore_handlers()
        if self.signum is not None:
            self._stop(trainer)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Put the previous handlers back whatever ended the run."""
        self._restore_handlers()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Put the previous handlers back."""
        self._restore_handlers()

    def _stop(self, trainer: Trainer) -> None:
        signum = self.signum
        self._restore_handlers()
        path = save_last_checkpoint(trainer)
        raise RunInterrupted(signum, path)


def save_last_checkpoint(trainer: Trainer) -> Path:
    """Write the ``last.ckpt`` of the trainer's checkpoint callback now; return its path."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
        callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
        if callback.last_model_path:
            return Path(callback.last_model_path)
    folder = (
        Path(callback.dirpath)
        if callback and callback.dirpath
        else Path(trainer.default_root_dir) / "checkpoints"
    )
    path = folder / "last.ckpt"
    trainer.save_checkpoint(path)  # through the strategy's (atomic) checkpoint IO
    return path
