"""EMA and SWA of the weights: Lightning's ``WeightAveraging`` with two gaps closed.

Lightning swaps the averaged weights in for validation, copies them into the model when
training ends, and saves them as the checkpoint's ``state_dict`` (the raw weights go to
``current_model_state``, the average's counter to ``averaging_state``). The subclasses here add:

- Testing a checkpoint after fit (``trainer.test(ckpt_path="best")``): Lightning's
  ``on_load_checkpoint`` reloads ``current_model_state`` whenever the callback has an averaged
  model, so the *raw* weights were tested. Outside fitting the checkpoint's ``state_dict`` (the
  average) is kept.
- Entries of ``state_dict`` that are neither parameters nor buffers (persistent metric states
  such as ``val_acc_best``) are taken from the raw module: the averaged copy froze them when
  fitting started.
- A checkpoint written after an optimizer step but before this callback's own
  ``on_train_batch_end`` (by a callback listed earlier, such as the Ctrl-C/SIGTERM
  checkpoint) first applies that step's pending update, so the saved average matches the step.
- Before the first update (``update_starting_at_step``, SWA's ``start``) the average is only
  the initial weights: validation, the test after fitting and checkpoints then use the raw
  weights instead.
- A checkpoint written during validation (Ctrl-C/SIGTERM), while the averaged weights are
  swapped into the module, still saves the average as ``state_dict`` and the raw weights as
  ``current_model_state`` (Lightning would store them the other way round).
- The epoch of the last update is saved too, so a resumed run never repeats an epoch update.
"""

from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class _SafeAveraging(WeightAveraging):
    """Fixes shared by :class:`EMA` and :class:`SWA` (see the module docstring)."""

    _swapped = False  # the averaged weights are in the module (during validation)

    def _has_average(self) -> bool:
        """At least one update was made (before it the average holds the initial weights)."""
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def on_validation_epoch_start(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule"
    ) -> None:
        """Swap the averaged weights in (Lightning), once there is an average."""
        if self._has_average():
            super().on_validation_epoch_start(trainer, pl_module)
            self._swapped = True

    def on_validation_epoch_end(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule"
    ) -> None:
        """Swap the raw weights back (Lightning)."""
        if self._swapped:
            super().on_validation_epoch_end(trainer, pl_module)
            self._swapped = False

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """Copy the averaged weights into the module (Lightning), once there is an average."""
        if self._has_average():
            super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", checkpoint: dict[str, Any]
    ) -> None:
        """Averaged weights in ``state_dict``, raw ones in ``current_model_state``."""
        step = trainer.global_step
        if (
            self._average_model is not None
            and trainer.state.fn == TrainerFn.FITTING
            and not self._swapped
            and step > self._latest_update_step
            and self.should_update(step_idx=step - 1)
        ):
            # the update on_train_batch_end would make right after: the weights are the same
            self._average_model.update_parameters(pl_module)
            self._latest_update_step = step
            if self.state_key in checkpoint.get("callbacks", {}):  # collected before this hook
                checkpoint["callbacks"][self.state_key] = self.state_dict()
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        raw = checkpoint.get("current_model_state")
        if raw is None:
            return
        averaged = {name for name, _ in pl_module.named_parameters()}
        averaged |= {name for name, _ in pl_module.named_buffers()}
        if self._swapped:  # mid-validation: the module holds the average, the copy the raw weights
            in_module, in_copy = raw, checkpoint["state_dict"]
            checkpoint["state_dict"] = dict(in_module)
            checkpoint["current_model_state"] = {
                name: in_copy[name] if name in averaged else value
                for name, value in in_module.items()
            }
            return
        if not self._has_average():
            checkpoint["state_dict"] = dict(raw)  # nothing averaged yet: the raw weights
            return
        for name, value in raw.items():
            if name not in averaged:
                checkpoint["state_dict"][name] = value

    def on_load_checkpoint(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", checkpoint: dict[str, Any]
    ) -> None:
        """Resume both weight sets when fitting; otherwise keep the averaged ``state_dict``."""
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def state_dict(self) -> dict[str, Any]:
        """Steps and epoch of the last update."""
        return {**super().state_dict(), "latest_update_epoch": self._latest_update_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        super().load_state_dict(state_dict)
        self._latest_update_epoch = state_dict.get("latest_update_epoch", -1)


class EMA(_SafeAveraging, EMAWeightAveraging):
    """Exponential moving average of the weights, updated after optimizer steps.

    Takes the arguments of :class:`~lightning.pytorch.callbacks.EMAWeightAveraging`
    (``decay``, ``update_every_n_steps``, ``update_starting_at_step``, ``device`` ...).

    :param warmup: Grow the decay with the number of updates ``n`` as
        ``min(decay, (1 + n) / (10 + n))``, so that in a short run the average forgets the
        initial weights (with a fixed 0.999, 430 steps still keep 65% of them).
    """

    def __init__(self, decay: float = 0.999, warmup: bool = False, **kwargs: Any) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(
                f"callbacks.ema.decay={decay} must be in [0, 1): the share of the old average "
                "kept per update (0.999 averages about the last 1000 steps)."
            )
        super().__init__(decay=decay, **kwargs)
        self.decay, self.warmup = decay, warmup
        if warmup:
            self._kwargs["avg_fn"] = partial(warmed_up_ema, decay=decay)


def warmed_up_ema(
    average: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor, decay: float
) -> torch.Tensor:
    """One EMA step whose decay grows with the updates so far: ``min(decay, (1+n)/(10+n))``."""
    n = float(num_averaged)
    step_decay = min(decay, (1.0 + n) / (10.0 + n))
    return step_decay * average + (1.0 - step_decay) * current


class SWA(_SafeAveraging):
    """Stochastic weight averaging: the equal-weight mean of the weights from ``start`` on.

    :param start: First optimizer step averaged: a fraction of the run's steps (``0 <= start <
        1``, from ``trainer.estimated_stepping_batches``) or a step number (``>= 1``).
    :param update_every_n_steps: Average every n-th optimizer step.
    :param kwargs: Passed to :class:`~lightning.pytorch.callbacks.WeightAveraging`.
    """

    def __init__(self, start: float = 0.75, update_every_n_steps: int = 1, **kwargs: Any) -> None:
        if start < 0 or (start >= 1 and start != int(start)):
            raise ValueError(
                f"callbacks.swa.start={start} must be a fraction of the run in [0, 1) or a step "
                "number >= 1, e.g. 0.75 to average the last quarter."
            )
        if update_every_n_steps < 1:
            raise ValueError(
                f"callbacks.swa.update_every_n_steps={update_every_n_steps} must be >= 1."
            )
        super().__init__(**kwargs)
        self.start = start
        self.update_every_n_steps = int(update_every_n_steps)
        self._start_step = int(start) if start >= 1 else None

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        """Turn a fractional ``start`` into a step once the run's length is known."""
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and self.start < 1:
            self._start_step = int(self.start * trainer.estimated_stepping_batches)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Every ``update_every_n_steps``-th step from the start step on (never per epoch)."""
        if step_idx is None or self._start_step is None or step_idx < self._start_step:
            return False
        return (step_idx - self._start_step) % self.update_every_n_steps == 0
