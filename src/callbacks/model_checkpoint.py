"""The checkpoint callback: atomic saves, and decisions that continue exactly after a resume.

- :class:`AtomicCheckpointIO` writes each checkpoint through
  :func:`~src.utils.checkpoints.atomic_torch_save` (temporary file in the same folder, fsync,
  ``os.replace``), so a crash while saving leaves the previous ``last.ckpt`` intact. Lightning's
  own ``_atomic_save`` writes the temporary file in the system temp folder and moves it with
  ``shutil.move``, which falls back to an in-place copy (not atomic) when ``/tmp`` is another
  filesystem, and never fsyncs.
- :class:`ResumableModelCheckpoint` installs that IO and makes a resumed run checkpoint (and so
  test) exactly as the uninterrupted run would: it restores the logged metrics (without them
  Lightning postpones step checkpoints until the next validation) and, when a run resumes into a
  new run folder, keeps comparing against the best checkpoints of the earlier folder (Lightning
  forgets them when ``dirpath`` changes).
"""

from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning import LightningModule, Trainer
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from src.utils.checkpoints import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (remote paths keep Lightning's IO)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Save ``checkpoint`` to ``path`` atomically when ``path`` is on a local disk."""
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)


class ResumableModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with atomic saves whose decisions continue exactly after a resume.

    Takes the arguments of :class:`~lightning.pytorch.callbacks.ModelCheckpoint`.
    """

    #: Checkpoint key holding ``trainer.callback_metrics`` at save time.
    METRICS_KEY = "callback_metrics"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics_to_restore: dict[str, Any] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Resolve the folder, then make the strategy's default checkpoint IO atomic."""
        super().setup(trainer, pl_module, stage)
        # Only the plain default is replaced: a user-chosen or strategy-specific IO is kept.
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Also save a step checkpoint that Lightning postponed to the end of validation.

        Lightning 2.6 postpones a step save that lands on the last batch of an epoch (or comes
        before the first validation) to ``on_validation_end``, which does nothing when saving at
        the end of the training epoch (the default): the checkpoint was silently never written.
        """
        deferred = getattr(self, "_defer_save_until_validation", False)
        super().on_train_epoch_end(trainer, pl_module)
        if (
            deferred
            and self._should_save_on_train_epoch_end(trainer)
            and not self._should_skip_saving_checkpoint(trainer)
        ):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
            self._defer_save_until_validation = False
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_stale_last(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Refresh ``last.ckpt`` at every epoch save point, not only when the metric improved."""
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_stale_last(trainer)

    def _refresh_stale_last(self, trainer: Trainer) -> None:
        """Lightning 2.6 writes ``last.ckpt`` only when a top-k file was saved at the same step,
        so with ``monitor`` set it went stale as soon as the metric stopped improving, and
        ``ckpt_path=last`` resumed from an older epoch. Save it at every epoch save point."""
        epochs = self._every_n_epochs
        if (
            self.save_last
            and epochs >= 1
            and (trainer.current_epoch + 1) % epochs == 0
            and not self._should_skip_saving_checkpoint(trainer)
            and self._last_global_step_saved != trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Save the logged metrics (0-d tensors) with the checkpoint."""
        metrics = trainer.callback_metrics
        checkpoint[self.METRICS_KEY] = {
            k: v.detach().cpu() for k, v in metrics.items() if isinstance(v, torch.Tensor)
        }

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Keep the saved metrics until training starts (the sanity check clears metrics)."""
        self._metrics_to_restore = dict(checkpoint.get(self.METRICS_KEY, {}))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Put back the metrics of the checkpoint, so ``monitor`` is known before validating."""
        super().on_train_start(trainer, pl_module)
        for key, value in self._metrics_to_restore.items():
            trainer.callback_metrics.setdefault(key, value.to(pl_module.device))
        self._metrics_to_restore = {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the best-model bookkeeping, also from a checkpoint of another run folder.

        Lightning forgets the best scores when ``dirpath`` changed (every resume writes a new
        Hydra run folder). The earlier best files are still on disk, so keep comparing with
        them; Lightning never deletes checkpoints outside its own ``dirpath``.
        """
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            return
        kept = {p: s for p, s in state_dict.get("best_k_models", {}).items() if Path(p).is_file()}
        self.best_model_path = ""
        if not kept:
            return
        self.best_k_models = kept
        pick_best = min if self.mode == "min" else max
        pick_kth = max if self.mode == "min" else min
        self.best_model_path = pick_best(kept, key=kept.get)
        self.best_model_score = kept[self.best_model_path]
        self.kth_best_model_path = pick_kth(kept, key=kept.get)
        self.kth_value = kept[self.kth_best_model_path]
