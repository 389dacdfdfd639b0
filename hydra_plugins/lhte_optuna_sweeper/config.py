"""Structured config of the sweeper, registered as ``hydra/sweeper=lhte_optuna``."""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    """Settings of :class:`~hydra_plugins.lhte_optuna_sweeper.optuna_sweeper.OptunaSweeper`.

    ``sampler``, ``pruner`` and ``storage`` (when a dict) are instantiated with Hydra, e.g.
    ``{_target_: optuna.samplers.TPESampler, seed: 1}``.
    """

    _target_: str = "hydra_plugins.lhte_optuna_sweeper.optuna_sweeper.OptunaSweeper"

    # "minimize" or "maximize" the value returned by the task (train.py: `optimized_metric`)
    direction: str = "minimize"
    # name of the study in `storage`; workers sharing a study use the same name
    study_name: str | None = None
    # SQLAlchemy URL (sqlite:///path.db, postgresql://user:pw@host/db, ...);
    # null: a SQLite file `optuna.db` in the sweep folder, so every search can be resumed
    storage: str | None = None
    # join the study if it exists (resume, or several workers sharing it)
    load_if_exists: bool = True
    # trials of the whole study (all workers, all resumes) that end COMPLETE or PRUNED
    n_trials: int = 20
    # trials asked and launched together (run in parallel by a parallel launcher)
    n_jobs: int = 1
    # stop this worker after this many FAILed trials (null: n_trials)
    max_failures: int | None = None
    # null: optuna's default (TPESampler)
    sampler: Any = None
    # null: no pruning (optuna.pruners.NopPruner)
    pruner: Any = None
    # search space in Hydra's sweep syntax: {key: "interval(1e-4, 1e-1)", key2: "choice(a, b)"};
    # untyped (not dict[str, str]) so that `params=null 'params={...}'` can replace it
    params: Any = None
    # seconds between heartbeats of running trials, and after which a silent trial is stale
    # (its worker was killed): it is then marked FAIL and its parameters retried
    heartbeat_interval: int = 60
    grace_period: int = 180
    # SQLite lock timeout (seconds) while several workers write to one file
    sqlite_timeout: float = 60.0


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="lhte_optuna",
    node=OptunaSweeperConf,
    provider="lhte_optuna_sweeper",
)
