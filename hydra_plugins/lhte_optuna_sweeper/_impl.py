"""The search loop: ask a batch of trials, launch them with Hydra's launcher, tell the results.

The study lives in an RDB storage (a SQLite file in the sweep folder by default), so a search
can be resumed, and several workers on several machines can share it through one URL:

- the budget ``n_trials`` counts the study's COMPLETE and PRUNED trials, whoever ran them;
  RUNNING trials of other workers hold a slot, FAILed ones are replaced;
- each running trial sends a heartbeat; a trial silent for ``grace_period`` seconds (its worker
  was killed) is marked FAIL and its parameters are queued again, once;
- a trial asked while another worker took the last slot is marked FAIL at once, unrun.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException, HydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.trial import TrialState

from hydra_plugins.lhte_optuna_sweeper._search_space import SearchSpace
from hydra_plugins.lhte_optuna_sweeper.trial_handle import open_storage, trial_env_overrides
from src.utils.secrets import mask_url_passwords, redact_log_records, url_passwords

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what n_trials counts
SLOT_HOLDERS = (*FINISHED, TrialState.RUNNING)
# a trial whose worker died or was interrupted is queued again this many times at most
MAX_RETRIES = 2


class OptunaSweeperImpl:
    """Runs the search; see :class:`~hydra_plugins.lhte_optuna_sweeper.config.OptunaSweeperConf`."""

    def __init__(
        self,
        direction: str,
        study_name: str | None,
        storage: str | None,
        load_if_exists: bool,
        n_trials: int,
        n_jobs: int,
        max_failures: int | None,
        sampler: Any,
        pruner: Any,
        params: dict[str, Any] | None,
        heartbeat_interval: int,
        grace_period: int,
        sqlite_timeout: float,
    ) -> None:
        if direction not in ("minimize", "maximize"):
            raise HydraException(f"direction must be 'minimize' or 'maximize', got '{direction}'.")
        if n_trials < 1 or n_jobs < 1:
            raise HydraException(f"n_trials and n_jobs must be >= 1, got {n_trials}, {n_jobs}.")
        if grace_period <= heartbeat_interval:
            raise HydraException(
                f"grace_period ({grace_period} s) must exceed heartbeat_interval "
                f"({heartbeat_interval} s), or live trials would be taken for dead ones."
            )
        self.direction = direction
        self.study_name = study_name
        self.storage_url = storage
        self.load_if_exists = load_if_exists
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failures = n_trials if max_failures is None else max_failures
        self.sampler_cfg = sampler
        self.pruner_cfg = pruner
        self.params = dict(params or {})
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.sqlite_timeout = sqlite_timeout

        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None
        self.storage: optuna.storages.RDBStorage | None = None
        self._retry: Any = None  # re-queues the parameters of an interrupted trial

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep the config and build the launcher that runs the trials."""
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ------------------------------------------------------------------ search loop
    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        """Run trials until the study holds ``n_trials`` COMPLETE or PRUNED trials."""
        assert self.config is not None and self.launcher is not None, "call setup() first"
        space = self._search_space(arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self._hide_storage_password()
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = self._open_study(sweep_dir)
        log.info(
            f"Study '{study.study_name}' ({self.direction}) in {_masked(self.storage_url)}: "
            f"{len(_trials(study, FINISHED))}/{self.n_trials} trials done; searching "
            f"{', '.join(space.distributions) or 'nothing (every parameter is fixed)'}"
        )

        returns: list[Sequence[JobReturn]] = []
        failures, launched = 0, 0
        with _Heartbeat(self.storage, self.heartbeat_interval) as heartbeat:
            while (free := self._free_slots(study)) > 0:
                trials = self._ask(study, space, min(free, self.n_jobs))
                if not trials:
                    continue
                overrides = [self._job_overrides(study, space, t, sweep_dir) for t in trials]
                heartbeat.track(trials)
                try:
                    if launched == 0 and self.hydra_context is not None:
                        self.validate_batch_is_legal(overrides)  # config errors stop the sweep
                    results = self.launcher.launch(overrides, initial_job_idx=launched)
                except BaseException:  # Ctrl-C, a config or launcher error: free the slots
                    self._abandon(study, trials)
                    raise
                finally:
                    heartbeat.untrack(trials)
                launched += len(trials)
                failures += sum(
                    not self._tell(study, t, r) for t, r in zip(trials, results, strict=True)
                )
                returns.append(results)
                if failures >= self.max_failures:
                    raise HydraException(
                        f"{failures} trials failed (max_failures={self.max_failures}); "
                        "their errors are logged above and in the trials' 'fail_reason'."
                    )
        self._save_results(study, sweep_dir)
        return returns

    def _hide_storage_password(self) -> None:
        """Mask the storage URL's password in every log record and in the config Hydra saves.

        The launcher writes ``multirun.yaml`` from this config and composes each trial from its
        ``hydra.overrides``, so masking it here keeps the password out of the sweep folder;
        ``self.storage_url`` keeps the real URL for Optuna (and the trials, through their
        environment: the task masks it in its own files).
        """
        passwords = url_passwords(self.storage_url or "")
        if not passwords:
            return
        redact_log_records(passwords)
        assert self.config is not None
        with read_write(self.config), open_dict(self.config):
            sweeper = self.config.hydra.sweeper
            raw = OmegaConf.to_container(sweeper, resolve=False).get("storage")
            if isinstance(raw, str):  # an ${oc.env:...} interpolation is kept as it is
                sweeper.storage = mask_url_passwords(raw)
            for group in ("hydra", "task"):
                overrides = self.config.hydra.overrides.get(group) or []
                for i, override in enumerate(overrides):
                    overrides[i] = _mask_override(override)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose each job's config once, so a bad override fails before any training."""
        assert self.hydra_context is not None and self.config is not None
        for overrides in batch:
            self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def _search_space(self, arguments: list[str]) -> SearchSpace:
        """Sweep params from the config, then command-line overrides (which win)."""
        loader = self.hydra_context.config_loader if self.hydra_context else None
        parser = OverridesParser.create(config_loader=loader)
        space = SearchSpace()
        lines = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
        for override in parser.parse_overrides(lines):
            space.add(override)
        return space

    def _open_study(self, sweep_dir: Path) -> optuna.Study:
        """Create or join the study; ``storage: null`` means a SQLite file in the sweep folder."""
        self.storage_url = self.storage_url or f"sqlite:///{sweep_dir / 'optuna.db'}"
        retry = _retry_callback()
        with warnings.catch_warnings(), _storage_errors(self.storage_url):
            # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.storage = open_storage(
                self.storage_url,
                sqlite_timeout=self.sqlite_timeout,
                heartbeat_interval=self.heartbeat_interval,
                grace_period=self.grace_period,
                **{_stale_callback_argument(): retry},
            )
        self._retry = retry
        if self.study_name is None:
            log.warning(
                "study_name is null: set it so that resumes and other workers find the study."
            )
        study = optuna.create_study(
            storage=self.storage,
            sampler=_build(self.sampler_cfg),
            pruner=_build(self.pruner_cfg) or optuna.pruners.NopPruner(),
            study_name=self.study_name,
            direction=self.direction,
            load_if_exists=self.load_if_exists,
        )
        if study.direction.name.lower() != self.direction:
            raise HydraException(
                f"Study '{study.study_name}' exists with direction {study.direction.name.lower()}, "
                f"not {self.direction}: use another study_name or storage."
            )
        # what the trials' values are, for reports (train.py returns `optimized_metric`)
        objective = OmegaConf.select(self.config, "optimized_metric", default=None)
        if objective and "objective" not in study.user_attrs:
            study.set_user_attr("objective", str(objective))
        return study

    def _free_slots(self, study: optuna.Study) -> int:
        """Trials still to start; waits while other workers' running trials hold the rest."""
        while True:
            with warnings.catch_warnings():  # fail_stale_trials is "experimental" since 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            done = len(_trials(study, FINISHED))
            running = len(_trials(study, (TrialState.RUNNING,)))
            if done >= self.n_trials:
                return 0
            if (free := self.n_trials - done - running) > 0:
                return free
            log.info(
                f"{done}/{self.n_trials} trials done, {running} running elsewhere: waiting for "
                f"them (a trial silent for {self.grace_period} s is failed and retried here)."
            )
            time.sleep(min(self.heartbeat_interval, 10))

    def _ask(self, study: optuna.Study, space: SearchSpace, count: int) -> list[optuna.Trial]:
        """Ask ``count`` trials; drop those beyond the budget (another worker was faster)."""
        with warnings.catch_warnings():  # "heartbeat ... supposed to be used with optimize"
            warnings.simplefilter("ignore", UserWarning)
            trials = [study.ask(space.distributions) for _ in range(count)]
        holders = _trials(study, SLOT_HOLDERS)
        kept = []
        for trial in trials:
            if sum(t.number < trial.number for t in holders) < self.n_trials:
                kept.append(trial)
            else:
                _note_reason(trial, "not run: the budget was used by other workers")
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        return kept

    def _job_overrides(
        self, study: optuna.Study, space: SearchSpace, trial: optuna.Trial, sweep_dir: Path
    ) -> list[str]:
        """The trial's parameters, plus where its job finds the trial and writes its outputs."""
        subdir = f"trial_{trial.number:03d}"  # named after the study-wide trial number
        trial.set_user_attr("output_dir", str(sweep_dir / subdir))
        return [
            *space.overrides(trial.params),
            *trial_env_overrides(self.storage_url, study.study_name, trial._trial_id),
            f"hydra.sweep.subdir={subdir}",
        ]

    def _tell(self, study: optuna.Study, trial: optuna.Trial, result: JobReturn) -> bool:
        """Record a job's outcome; return False when the trial failed."""
        if result.status != JobStatus.COMPLETED:
            error = result._return_value  # the job's exception (`return_value` re-raises it)
            if isinstance(error, optuna.TrialPruned):
                if not _told(study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)):
                    return False
                log.info(f"Trial {trial.number} PRUNED: {error}")
                return True
            return self._fail(study, trial, f"{type(error).__name__}: {error}")
        try:
            value = float(result.return_value)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            reason = f"the task returned {result.return_value!r}, not a finite number"
            return self._fail(study, trial, f"{reason}: check `optimized_metric`.")
        if not _told(study.tell(trial, value, skip_if_finished=True), value):
            return False
        best = study.best_trial
        log.info(
            f"Trial {trial.number} COMPLETE: {value:.6g} | best: trial {best.number} "
            f"{best.value:.6g} {best.params}"
        )
        return True

    def _fail(self, study: optuna.Study, trial: optuna.Trial, reason: str) -> bool:
        if _note_reason(trial, reason[:2000]):
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        log.warning(f"Trial {trial.number} FAIL: {reason}")
        return False

    def _abandon(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        """Fail interrupted trials and queue their parameters again, for a resume."""
        for trial in trials:
            if _note_reason(trial, "interrupted"):
                self._retry(study, study.tell(trial, state=TrialState.FAIL, skip_if_finished=True))
        log.warning(f"Interrupted: trials {[t.number for t in trials]} will be rerun on resume.")

    def _save_results(self, study: optuna.Study, sweep_dir: Path) -> None:
        """Write ``optimization_results.yaml`` (best trial and counts) to the sweep folder."""
        counts = {s.name.lower(): len(_trials(study, (s,))) for s in TrialState}
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": _masked(self.storage_url),
            "direction": self.direction,
            "trials": counts,
        }
        if counts["complete"]:
            best = study.best_trial
            results.update(best_trial=best.number, best_value=best.value, best_params=best.params)
            log.info(f"Best trial {best.number}: {best.value:.6g} with {best.params}")
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        log.info(f"Results: {sweep_dir / 'optimization_results.yaml'} ({counts})")


class _Heartbeat:
    """Background thread recording heartbeats of this worker's running trials."""

    def __init__(self, storage: Any, interval: int) -> None:
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="optuna-heartbeat")

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join()

    def track(self, trials: list[optuna.Trial]) -> None:
        """Start beating for ``trials`` (first beat now: beat-less trials never turn stale)."""
        with self.lock:
            self.trial_ids |= {t._trial_id for t in trials}
        for trial in trials:
            self.storage.record_heartbeat(trial._trial_id)

    def untrack(self, trials: list[optuna.Trial]) -> None:
        """Stop beating for ``trials``."""
        with self.lock:
            self.trial_ids -= {t._trial_id for t in trials}

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            with self.lock:
                trial_ids = list(self.trial_ids)
            for trial_id in trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as error:  # a busy database must not kill the sweep
                    log.debug(f"Heartbeat of trial id {trial_id} failed: {error}")


def _told(frozen: optuna.trial.FrozenTrial, value: float | None = None) -> bool:
    """False, with a warning, if ``tell`` found the trial already failed by another worker."""
    if frozen.state == TrialState.FAIL:
        log.warning(
            f"Trial {frozen.number} was failed meanwhile by a worker that found its heartbeat "
            f"late; its result ({value if value is not None else 'pruned'}) is dropped."
        )
        return False
    return True


def _note_reason(trial: optuna.Trial, reason: str) -> bool:
    """Store why ``trial`` failed; False if it is already finished (another worker found it
    silent, failed it and queued its retry: nothing left to do here)."""
    try:
        trial.set_user_attr("fail_reason", reason)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


def _build(obj: Any) -> Any:
    """Instantiate a ``{_target_: ...}`` config; Hydra usually did it already (recursively)."""
    return instantiate(obj) if isinstance(obj, (dict, DictConfig)) else obj


def _trials(study: optuna.Study, states: tuple[TrialState, ...]) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=states)


def _retry_callback() -> Any:
    """Optuna's retry callback (renamed in 4.9: RetryFailedTrialCallback is its old name)."""
    retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental / deprecated-name warnings
        if retry_cls is None:
            return optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRIES)
        return retry_cls(max_retry=MAX_RETRIES)


def _stale_callback_argument() -> str:
    """RDBStorage's argument for that callback (``failed_trial_callback`` before 4.9)."""
    import inspect

    arguments = inspect.signature(optuna.storages.RDBStorage).parameters
    return (
        "heartbeat_stale_trial_callback"
        if "heartbeat_stale_trial_callback" in arguments
        else "failed_trial_callback"
    )


def _mask_override(override: str) -> str:
    """``key=scheme://user:pw@host`` as ``key='scheme://user:<mask>@host'`` (quoted: the mask's
    ``<``/``>`` are not valid in an unquoted override value)."""
    key, sep, value = override.partition("=")
    masked = mask_url_passwords(value)
    if masked == value:
        return override
    quoted = value[:1] in ("'", '"')
    return f"{key}{sep}{masked}" if quoted else f"{key}{sep}'{masked}'"


def _masked(url: str | None) -> str:
    """The storage URL without its password, for logs and result files."""
    if url is None:
        return "memory"
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class StorageError(CompactHydraException):
    """``hydra.sweeper.storage`` cannot be opened (printed by Hydra as one line)."""


@contextlib.contextmanager
def _storage_errors(url: str) -> Iterator[None]:
    """Turn SQLAlchemy's errors about a storage URL into one message naming the setting."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    shown = f"hydra.sweeper.storage={mask_url_passwords(url)}"
    example = "e.g. sqlite:///optuna.db, or postgresql://user:password@host/db"
    try:
        yield
    except (ArgumentError, NoSuchModuleError) as err:
        raise StorageError(
            f"{shown} is not a database URL SQLAlchemy knows ({str(err).splitlines()[0]}); "
            f"{example}, or null for a SQLite file in the sweep folder."
        ) from None
    except ImportError as err:
        raise StorageError(
            f"{shown} needs a database driver that is not installed ({str(err).splitlines()[0]}"
            "); install the one for this database, e.g. pip install psycopg2-binary "
            "(PostgreSQL) or pip install pymysql (MySQL, with a mysql+pymysql:// URL)."
        ) from None
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).splitlines()[0]
        raise StorageError(
            f"{shown} cannot be opened ({reason}). Check that the database server is reachable "
            "and the credentials are right (for SQLite: that the file's folder exists)."
        ) from None
