"""Stop training at the first NaN/inf loss, before a checkpoint of the bad weights is written.

Once the loss is NaN the weights soon are too, and every later checkpoint (``last.ckpt``
included) would hold them. :class:`FiniteLossCheck` raises :class:`NonFiniteLossError`
naming the global step, epoch, batch and loss value, and the last good checkpoint stays the
newest file.

Reading a GPU tensor's value waits for the GPU, so on accelerators the check only records the
first bad step in device tensors every batch (no sync) and reads them every
``trainer.log_every_n_steps`` steps, and always before validation, before any checkpoint is
saved and at the end of training. On CPU reading is free and every step is checked.
"""

from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from src.utils.pylogger import RankedLogger

log = RankedLogger(__name__, rank_zero_only=True)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class FiniteLossCheck(Callback):
    """Raise :class:`NonFiniteLossError` when the training loss is not finite.

    :param check_every_n_steps: Read the recorded flag every this many optimizer steps; ``None``
        uses 1 on CPU and ``trainer.log_every_n_steps`` on accelerators (where a read is a sync).
    """

    def __init__(self, check_every_n_steps: int | None = None) -> None:
        super().__init__()
        if check_every_n_steps is not None and check_every_n_steps < 1:
            raise ValueError(
                f"check_every_n_steps must be >= 1 or null, got {check_every_n_steps}."
            )
        self.check_every_n_steps = check_every_n_steps
        self._step_at_start = 0
        # First bad (global step, epoch, batch) and loss value, kept on the loss's device.
        self._first: torch.Tensor | None = None
        self._value: torch.Tensor | None = None

    def _interval(self, trainer: Trainer) -> int:
        if self.check_every_n_steps is not None:
            return self.check_every_n_steps
        on_cpu = trainer.strategy.root_device.type == "cpu"
        return 1 if on_cpu else max(1, int(trainer.log_every_n_steps))

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Remember the step the batch's loss belongs to (it is incremented by the update)."""
        self._step_at_start = trainer.global_step

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Record the first non-finite loss on device; read the record when a check is due."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return  # training_step returned None (batch skipped) or manual optimization
        loss = loss.detach().float().reshape(())
        where = torch.tensor(
            [self._step_at_start, trainer.current_epoch, batch_idx], dtype=torch.int64
        )
        if self._first is None:
            self._first = torch.full((3,), -1, dtype=torch.int64, device=loss.device)
            self._value = torch.zeros((), device=loss.device)
        # Element-wise ops queued on the device: no host sync.
        new = ~torch.isfinite(loss) & (self._first[0] < 0)
        self._first = torch.where(new, where.to(loss.device, non_blocking=True), self._first)
        self._value = torch.where(new, loss, self._value)
        if (self._step_at_start + 1) % self._interval(trainer) == 0:
            self.raise_if_bad(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check before validation (which may end in a checkpoint)."""
        if not trainer.sanity_checking:
            self.raise_if_bad(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check before the end-of-epoch checkpoint."""
        self.raise_if_bad(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check the last steps, so a run never ends quietly with NaN weights."""
        self.raise_if_bad(trainer)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Last line of defence: refuse to write weights trained on a non-finite loss."""
        self.raise_if_bad(trainer)

    def raise_if_bad(self, trainer: Trainer) -> None:
        """Read the record (one sync on accelerators) and raise if any process saw a bad loss."""
        local_bad = self._first is not None and bool(self._first[0] >= 0)
        if not trainer.strategy.reduce_boolean_decision(local_bad, all=False):
            return
        if local_bad:
            step, epoch, batch = (int(v) for v in self._first.tolist())
            where = f"{float(self._value)} at global step {step} (epoch {epoch}, batch {batch})"
        else:
            where = "not finite on another process"
        callback = trainer.checkpoint_callback
        last_good = callback and (callback.last_model_path or callback.best_model_path)
        kept = (
            f"the last good checkpoint is {last_good}"
            if last_good
            else "no checkpoint had been written yet"
        )
        raise NonFiniteLossError(
            f"Training loss was {where}. Training stopped before any checkpoint of the weights "
            f"it produced was written; {kept}. Try a lower learning rate (model.optimizer.lr), "
            "gradient clipping (trainer.gradient_clip_val=1.0), full precision "
            "(trainer.precision=32), or check the data for NaN/inf values."
        )
