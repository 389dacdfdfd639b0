"""How a job finds the Optuna trial it runs, in this process or on another machine.

The sweeper sets three environment variables in each job through Hydra's ``hydra.job.env_set``
(so they reach jobs of any launcher: in-process, submitit, SLURM); :func:`current_trial` turns
them back into a live :class:`optuna.Trial` on the shared storage, for ``trial.report`` and
``trial.should_prune`` during training.
"""

from __future__ import annotations

import os
import random
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.types import Override

if TYPE_CHECKING:  # Optuna is imported lazily: Hydra imports this module at every start-up
    import optuna

STORAGE_ENV = "LHTE_OPTUNA_STORAGE"
STUDY_ENV = "LHTE_OPTUNA_STUDY"
TRIAL_ID_ENV = "LHTE_OPTUNA_TRIAL_ID"


def trial_env_overrides(storage_url: str, study_name: str, trial_id: int) -> list[str]:
    """Hydra overrides that export the trial's location to the job's environment."""
    env = {STORAGE_ENV: storage_url, STUDY_ENV: study_name, TRIAL_ID_ENV: str(trial_id)}
    return [
        f"++hydra.job.env_set.{name}={Override._get_value_element_as_str(value)}"
        for name, value in env.items()
    ]


def open_storage(
    url: str, sqlite_timeout: float = 60.0, attempts: int = 5, **kwargs: Any
) -> optuna.storages.RDBStorage:
    """An RDB storage for ``url``; SQLite waits up to ``sqlite_timeout`` s for other writers.

    Optuna creates the tables of a new database without a lock, so workers starting together
    on an empty database can collide ("table studies already exists"): retry a few times.

    :param kwargs: more :class:`optuna.storages.RDBStorage` arguments (heartbeat, callbacks).
    """
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    engine_kwargs = (
        {"connect_args": {"timeout": sqlite_timeout}} if url.startswith("sqlite") else {}
    )
    for attempt in range(1, attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except (IntegrityError, OperationalError):
            time.sleep(random.uniform(0.2, 1.0) * attempt)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)


def current_trial() -> optuna.Trial | None:
    """The trial this job runs for, or ``None`` outside an Optuna search.

    The trial's study uses the pruner of the job's own ``hydra.sweeper`` config, the same as
    the sweeper's, since Optuna keeps pruners in memory, not in the storage.
    """
    import optuna
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    if TRIAL_ID_ENV not in os.environ:
        return None
    pruner_cfg = HydraConfig.get().sweeper.get("pruner") if HydraConfig.initialized() else None
    pruner = instantiate(pruner_cfg) if pruner_cfg else optuna.pruners.NopPruner()
    study = optuna.load_study(
        study_name=os.environ[STUDY_ENV],
        storage=_shared_storage(os.environ[STORAGE_ENV]),
        pruner=pruner,
    )
    return optuna.Trial(study, int(os.environ[TRIAL_ID_ENV]))


@lru_cache(maxsize=4)
def _shared_storage(storage_url: str) -> optuna.storages.RDBStorage:
    # one engine per URL and process: in-process trials run one after another
    return open_storage(storage_url)
