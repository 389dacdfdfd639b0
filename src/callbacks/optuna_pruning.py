"""Prune hopeless Optuna trials from their validation metric, epoch by epoch.

Enabled by the ``hparams_search`` configs (``configs/callbacks/optuna_pruning.yaml``); outside a
search (no trial in the environment, see ``hydra_plugins/lhte_optuna_sweeper/trial_handle.py``)
the callback does nothing.
"""

import optuna
from lightning import Callback, LightningModule, Trainer

from hydra_plugins.lhte_optuna_sweeper.trial_handle import current_trial
from src.utils import pylogger

log = pylogger.RankedLogger(__name__, rank_zero_only=True)


class OptunaPruningCallback(Callback):
    """Report ``monitor`` to the running Optuna trial after each validation; stop bad trials.

    Rank 0 reports and asks the pruner; its decision is broadcast so that every rank raises
    :class:`optuna.TrialPruned`, which the sweeper records as a PRUNED trial.

    :param monitor: The validation metric to report, e.g. ``val/acc_best``: use the search's
        ``optimized_metric`` so that the pruner compares the same quantity the study optimizes.
    :param trial: The trial to report to; by default the one the sweeper started this job for.
    """

    def __init__(self, monitor: str, trial: optuna.Trial | None = None) -> None:
        super().__init__()
        self.monitor = monitor
        self.trial = trial

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Find the trial of this job (rank 0 only)."""
        if self.trial is None and trainer.is_global_zero:
            self.trial = current_trial()
        if self.trial is None:
            log.info("No Optuna trial is running: pruning callback disabled.")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Report the epoch's value; raise :class:`optuna.TrialPruned` if the pruner says so."""
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        message = ""
        if trainer.is_global_zero and self.trial is not None:
            if self.monitor not in trainer.callback_metrics:
                raise KeyError(
                    f"Pruning monitor '{self.monitor}' was not logged; logged metrics: "
                    f"{sorted(trainer.callback_metrics)}. Set callbacks.optuna_pruning.monitor."
                )
            value = float(trainer.callback_metrics[self.monitor])
            # one value per epoch: epochs compare across trials, steps do not (batch sizes vary)
            self.trial.report(value, step=epoch)
            if self.trial.should_prune():
                message = f"trial {self.trial.number} at epoch {epoch}: {self.monitor}={value:.4g}"
        message = trainer.strategy.broadcast(message)
        if message:
            raise optuna.TrialPruned(f"Pruned {message}")
