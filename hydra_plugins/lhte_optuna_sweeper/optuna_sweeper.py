"""The Hydra ``Sweeper`` plugin class; the work is done in :mod:`._impl`.

Hydra imports this module at every start-up to discover plugins, so it only imports Hydra;
Optuna is imported when a search actually starts.
"""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Hyperparameter search with Optuna: ``python src/train.py -m hparams_search=mnist_optuna``.

    Every keyword argument is a field of
    :class:`~hydra_plugins.lhte_optuna_sweeper.config.OptunaSweeperConf`.
    """

    def __init__(self, **settings: Any) -> None:
        from hydra_plugins.lhte_optuna_sweeper._impl import OptunaSweeperImpl

        self.sweeper = OptunaSweeperImpl(**settings)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Create the launcher that runs the trials (called by Hydra before :meth:`sweep`)."""
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        """Run the search; ``arguments`` are the command-line overrides."""
        return self.sweeper.sweep(arguments)
