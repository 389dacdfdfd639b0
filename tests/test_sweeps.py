"""Multiruns, launchers and the Optuna sweeper (hydra_plugins/lhte_optuna_sweeper).

Fast tests drive the sweeper with a fake launcher (a formula instead of training) and the
pruning callback with a fake trainer; slow tests run ``src/train.py`` end to end.
"""

import math
import multiprocessing
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.lhte_optuna_sweeper._impl import OptunaSweeperImpl
from hydra_plugins.lhte_optuna_sweeper._search_space import SearchSpace
from hydra_plugins.lhte_optuna_sweeper.trial_handle import (
    STORAGE_ENV,
    STUDY_ENV,
    TRIAL_ID_ENV,
    open_storage,
)
from src.callbacks.optuna_pruning import OptunaPruningCallback
from tests.conftest import ROOT, TINY_SPLIT, compose_config
from tests.conftest import _tune_for_tests as tune_for_tests

optuna.logging.set_verbosity(optuna.logging.WARNING)

SEARCH_CONFIGS = sorted(p.stem for p in (ROOT / "configs" / "hparams_search").glob("*.yaml"))


# ---------------------------------------------------------------- search space
def space_of(*overrides: str) -> SearchSpace:
    space = SearchSpace()
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        space.add(override)
    return space


def test_sweep_syntax_becomes_optuna_distributions() -> None:
    space = space_of(
        "lr=tag(log, interval(0.0001, 0.1))",
        "dropout=interval(0, 0.5)",
        "width=int(interval(8, 64))",
        "kernel=range(3, 8, 2)",
        "batch=choice(32, 64)",
        "opt=adam,sgd",
        "dims=choice([8,16],[16,32])",
        "epochs=3",
    )
    d = space.distributions
    assert d["lr"] == FloatDistribution(0.0001, 0.1, log=True)
    assert d["dropout"] == FloatDistribution(0.0, 0.5)
    assert d["width"] == IntDistribution(8, 64)
    assert d["kernel"] == IntDistribution(3, 7, step=2)  # range() excludes its stop
    assert d["batch"] == CategoricalDistribution((32, 64))
    assert d["opt"] == CategoricalDistribution(("adam", "sgd"))
    assert d["dims"] == CategoricalDistribution(("[8,16]", "[16,32]"))
    assert space.fixed == {"epochs": "epochs=3"}
    params = {"lr": 0.01, "batch": 64, "opt": "sgd", "dims": "[16,32]"}
    assert space.overrides(params) == ["epochs=3", "lr=0.01", "batch=64", "opt=sgd", "dims=[16,32]"]


def test_later_override_of_a_key_wins() -> None:
    space = space_of("lr=interval(0.1, 1)", "lr=0.5")
    assert space.distributions == {} and space.fixed == {"lr": "lr=0.5"}


def test_unsupported_sweep_is_rejected_with_the_supported_ones() -> None:
    with pytest.raises(HydraException, match=r"interval\(a, b\)"):
        space_of("model=glob(*)")


# ---------------------------------------------------------------- sweeper with a fake launcher
class FormulaLauncher:
    """Runs no training: a job's result is ``objective(params)`` (or what it raises)."""

    def __init__(self, objective: Callable[[dict], float]) -> None:
        self.objective = objective
        self.jobs: list[dict] = []

    def launch(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        results = []
        for overrides in job_overrides:
            params = dict(o.lstrip("+").split("=", 1) for o in overrides)
            self.jobs.append(params)
            try:
                value, status = self.objective(params), JobStatus.COMPLETED
            except Exception as error:
                value, status = error, JobStatus.FAILED
            results.append(JobReturn(overrides=overrides, status=status, _return_value=value))
        return results


def parabola(params: dict) -> float:
    return -((float(params["x"]) - 2.0) ** 2)


def make_sweeper(
    tmp_path: Path, objective: Callable[[dict], float] = parabola, **settings
) -> tuple[OptunaSweeperImpl, FormulaLauncher]:
    """A sweeper over ``x`` in [0, 4] with a SQLite study in ``tmp_path``."""
    defaults = dict(
        direction="maximize",
        study_name="test",
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        load_if_exists=True,
        n_trials=4,
        n_jobs=1,
        max_failures=None,
        sampler={"_target_": "optuna.samplers.RandomSampler", "seed": 0},
        pruner=None,
        params={"x": "interval(0, 4)"},
        heartbeat_interval=1,
        grace_period=2,
        sqlite_timeout=10.0,
    )
    sweeper = OptunaSweeperImpl(**{**defaults, **settings})
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    sweeper.launcher = launcher = FormulaLauncher(objective)
    return sweeper, launcher


def load(tmp_path: Path, name: str = "test") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}")


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgres://u:s3cret@nohost/db", "is not a database URL SQLAlchemy knows"),
        ("notaurl", "is not a database URL SQLAlchemy knows"),
        ("mysql://u:s3cret@localhost/db", "needs a database driver that is not installed"),
        ("sqlite:////nonexistent/dir/x.db", r"cannot be opened \(unable to open database file\)"),
    ],
)
def test_bad_storage_url_names_the_setting(tmp_path: Path, url: str, reason: str) -> None:
    """One line naming hydra.sweeper.storage (password masked) instead of SQLAlchemy's trace."""
    from hydra_plugins.lhte_optuna_sweeper._impl import StorageError

    sweeper, _ = make_sweeper(tmp_path, storage=url)
    with pytest.raises(StorageError, match=f"hydra.sweeper.storage=.*{reason}") as caught:
        sweeper._open_study(tmp_path / "sweep")
    assert "s3cret" not in str(caught.value)


def test_search_runs_n_trials_and_saves_results(tmp_path: Path) -> None:
    sweeper, launcher = make_sweeper(tmp_path, n_trials=5, n_jobs=2)
    sweeper.sweep(["y=7"])
    study = load(tmp_path)
    assert states(study) == ["COMPLETE"] * 5
    assert all(job["y"] == "7" for job in launcher.jobs)  # fixed overrides reach every job
    # each job knows its trial (for pruning) and writes into a folder named after it
    assert [job["hydra.job.env_set.LHTE_OPTUNA_TRIAL_ID"] for job in launcher.jobs] == [
        str(t._trial_id) for t in study.trials
    ]
    assert [job["hydra.sweep.subdir"] for job in launcher.jobs] == [
        f"trial_00{i}" for i in range(5)
    ]
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert results.best_value == study.best_value
    assert results.best_params.x == study.best_params["x"]
    assert results.trials.complete == 5


def test_default_storage_is_a_sqlite_file_in_the_sweep_folder(tmp_path: Path) -> None:
    sweeper, _ = make_sweeper(tmp_path, storage=None, n_trials=2)
    sweeper.sweep([])
    db = f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
    assert len(optuna.load_study(study_name="test", storage=db).trials) == 2


def test_failed_and_nan_trials_do_not_stop_the_search(tmp_path: Path) -> None:
    """A crashing job or a NaN objective is a FAIL trial; the budget counts the others."""
    outcomes = iter([ValueError("out of memory"), math.nan, 1.0, None, 2.0, 3.0])

    def flaky(params: dict) -> float:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    sweeper, _ = make_sweeper(tmp_path, objective=flaky, n_trials=3, max_failures=5)
    sweeper.sweep([])
    study = load(tmp_path)
    assert states(study) == ["FAIL", "FAIL", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    reasons = [t.user_attrs.get("fail_reason", "") for t in study.trials]
    assert "ValueError: out of memory" in reasons[0]
    assert "not a finite number" in reasons[1] and "optimized_metric" in reasons[3]
    assert study.best_value == 3.0


def test_too_many_failures_stop_the_search_with_a_clear_error(tmp_path: Path) -> None:
    def broken(params: dict) -> float:
        raise KeyError("val/acc_best")

    sweeper, _ = make_sweeper(tmp_path, objective=broken, n_trials=10, max_failures=2)
    with pytest.raises(HydraException, match="2 trials failed"):
        sweeper.sweep([])
    assert states(load(tmp_path)) == ["FAIL", "FAIL"]


def test_a_pruned_job_is_a_pruned_trial(tmp_path: Path) -> None:
    def prune_low_x(params: dict) -> float:
        if float(params["x"]) < 2:
            raise optuna.TrialPruned("x too low")
        return float(params["x"])

    sweeper, _ = make_sweeper(tmp_path, objective=prune_low_x, n_trials=6)
    sweeper.sweep([])
    trials = load(tmp_path).trials
    assert len(trials) == 6 and {t.state.name for t in trials} == {"COMPLETE", "PRUNED"}
    assert all((t.state == TrialState.PRUNED) == (t.params["x"] < 2) for t in trials)


def test_resume_counts_the_trials_already_done(tmp_path: Path) -> None:
    make_sweeper(tmp_path, n_trials=2)[0].sweep([])
    sweeper, launcher = make_sweeper(tmp_path, n_trials=4)
    sweeper.sweep([])
    assert len(launcher.jobs) == 2
    assert states(load(tmp_path)) == ["COMPLETE"] * 4
    # the resumed worker does not reuse the first worker's trial folders
    assert [job["hydra.sweep.subdir"] for job in launcher.jobs] == ["trial_002", "trial_003"]


def test_interrupted_trial_is_rerun_on_resume(tmp_path: Path) -> None:
    def interrupt_second(params: dict) -> float:
        if len(launcher.jobs) == 2:
            raise KeyboardInterrupt
        return parabola(params)

    sweeper, launcher = make_sweeper(tmp_path, objective=interrupt_second, n_trials=3)
    with pytest.raises(KeyboardInterrupt):
        sweeper.sweep([])
    assert states(load(tmp_path)) == ["COMPLETE", "FAIL", "WAITING"]

    sweeper, _ = make_sweeper(tmp_path, n_trials=3)
    sweeper.sweep([])
    trials = load(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].params == trials[1].params  # the interrupted parameters, run again


def test_trial_of_a_killed_worker_is_failed_and_retried(tmp_path: Path) -> None:
    """A RUNNING trial whose heartbeat stopped holds its slot until ``grace_period``, then is
    failed and its parameters are run again by a live worker (which waits for that)."""
    with warnings.catch_warnings():  # heartbeats are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1)
    dead_study = optuna.create_study(study_name="test", storage=storage, direction="maximize")
    dead = dead_study.ask({"x": FloatDistribution(0, 4)})
    storage.record_heartbeat(dead._trial_id)  # ...and then the worker was killed

    sweeper, launcher = make_sweeper(tmp_path, n_trials=1)
    started = time.perf_counter()
    sweeper.sweep([])
    assert time.perf_counter() - started >= 2  # waited for the grace period
    trials = load(tmp_path).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == dead.params
    assert trials[1].system_attrs["failed_trial"] == 0


def test_trial_failed_by_another_worker_meanwhile_is_left_alone(tmp_path: Path) -> None:
    """If another worker took a trial for dead (a heartbeat too late), its late result is
    dropped instead of crashing the sweep."""
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")

    def failed_meanwhile(params: dict) -> float:
        trial_id = int(params["hydra.job.env_set.LHTE_OPTUNA_TRIAL_ID"])
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        if len(launcher.jobs) == 1:
            raise RuntimeError("late failure")
        return 1.0

    sweeper, launcher = make_sweeper(tmp_path, failed_meanwhile, n_trials=1, max_failures=3)
    with pytest.raises(HydraException, match="3 trials failed"):
        sweeper.sweep([])
    assert states(load(tmp_path)) == ["FAIL"] * 3


def test_trial_beyond_the_budget_is_not_run(tmp_path: Path) -> None:
    """Two workers asking for the last slot at once: the later trial is failed, not run."""
    sweeper, launcher = make_sweeper(tmp_path, n_trials=1)
    study = sweeper._open_study(tmp_path)
    other = study.ask({"x": FloatDistribution(0, 4)})  # another worker took the last slot
    assert sweeper._ask(study, space_of("x=interval(0, 4)"), 1) == []
    study.tell(other, 1.0)
    trials = load(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"]
    assert "budget" in trials[1].user_attrs["fail_reason"]


def _formula_worker(tmp_path: Path, worker: int, running: list) -> None:
    def parabola_once_both_run(params: dict) -> float:
        # Both workers must be inside a trial before either finishes one, so a worker that
        # starts late (a busy CI machine) cannot find the whole budget already spent.
        running[worker].set()
        assert running[1 - worker].wait(timeout=60), "the other worker never started a trial"
        time.sleep(0.05)  # let the workers interleave
        return parabola(params)

    sampler = {"_target_": "optuna.samplers.RandomSampler", "seed": worker}
    sweeper, _ = make_sweeper(
        tmp_path, parabola_once_both_run, n_trials=8, n_jobs=2, sampler=sampler
    )
    sweeper.config.hydra.sweep.dir = str(tmp_path / f"worker{worker}")
    sweeper.sweep([])


def assert_shared_study_is_consistent(study: optuna.Study, n_trials: int) -> None:
    """Every trial number once, ``n_trials`` finished, nothing left running, none lost."""
    trials = study.trials
    assert [t.number for t in trials] == list(range(len(trials)))
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n_trials
    # anything else is a trial asked while the other worker took the last slot, never run
    assert all("budget" in t.user_attrs["fail_reason"] for t in trials if t not in finished)
    assert len({Path(t.user_attrs["output_dir"]).parent.name for t in finished}) == 2


def test_two_worker_processes_share_one_study(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")  # the workers only need Optuna and SQLite
    running = [context.Event(), context.Event()]
    workers = [
        context.Process(target=_formula_worker, args=(tmp_path, i, running)) for i in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert_shared_study_is_consistent(load(tmp_path), n_trials=8)


def test_existing_study_with_another_direction_is_refused(tmp_path: Path) -> None:
    make_sweeper(tmp_path, n_trials=1)[0].sweep([])
    with pytest.raises(HydraException, match="direction maximize, not minimize"):
        make_sweeper(tmp_path, direction="minimize")[0].sweep([])


def test_sweep_report_writes_table_plots_and_markdown(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from benchmarks.scripts.sweep_report import main as sweep_report

    def curve(params: dict) -> float:
        return 1 - (float(params["x"]) - 2.0) ** 2 / 4

    sweeper, _ = make_sweeper(tmp_path, curve, storage=None, n_trials=5)
    sweeper.params["opt"] = "choice(adam, sgd)"
    sweeper.sweep([])
    report = sweep_report([str(tmp_path / "sweep")])  # found from the sweep folder alone
    assert report == tmp_path / "sweep" / "report" / "report.md"
    for image in ("history.png", "importances.png"):
        assert (report.parent / image).stat().st_size > 1000
    text = report.read_text()
    best = optuna.load_study(
        study_name="test", storage=f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
    ).best_trial
    assert f"best: trial {best.number}, objective = {best.value:.4f}" in text
    assert "| `x` |" in text and "| `opt` |" in text  # importances of both parameters
    table = capsys.readouterr().out
    assert "Study test: maximize" in table and table.count("complete") == 5


# ---------------------------------------------------------------- pruning callback
class FakeTrial:
    """Records reports; the pruner prunes values below 0.5."""

    number = 7

    def __init__(self) -> None:
        self.reports: dict[int, float] = {}

    def report(self, value: float, step: int) -> None:
        self.reports[step] = value

    def should_prune(self) -> bool:
        return list(self.reports.values())[-1] < 0.5


def fake_trainer(value: float, epoch: int = 0, sanity_checking: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        sanity_checking=sanity_checking,
        current_epoch=epoch,
        is_global_zero=True,
        callback_metrics={"val/acc_best": torch.tensor(value)},
        strategy=SimpleNamespace(broadcast=lambda obj: obj),
    )


def test_pruning_callback_reports_each_epoch_and_prunes() -> None:
    trial = FakeTrial()
    callback = OptunaPruningCallback(monitor="val/acc_best", trial=trial)
    callback.on_validation_end(fake_trainer(0.1, sanity_checking=True), None)
    assert trial.reports == {}  # the sanity check is not an epoch
    callback.on_validation_end(fake_trainer(0.8, epoch=0), None)
    with pytest.raises(optuna.TrialPruned, match="trial 7 at epoch 1: val/acc_best=0.3"):
        callback.on_validation_end(fake_trainer(0.3, epoch=1), None)
    assert trial.reports == pytest.approx({0: 0.8, 1: 0.3})


def test_pruning_callback_names_the_logged_metrics_when_monitor_is_missing() -> None:
    callback = OptunaPruningCallback(monitor="val/auroc", trial=FakeTrial())
    with pytest.raises(KeyError, match=r"'val/auroc' was not logged.*val/acc_best"):
        callback.on_validation_end(fake_trainer(0.9), None)


def test_pruning_callback_is_inert_outside_a_search(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRIAL_ID_ENV, raising=False)
    callback = OptunaPruningCallback(monitor="val/acc_best")
    callback.on_fit_start(fake_trainer(0.0), None)
    callback.on_validation_end(fake_trainer(0.0), None)  # no trial: nothing to report or prune


def test_real_training_is_pruned_through_the_shared_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job of the search finds its trial from the environment the sweeper sets (in any
    launcher), reports val/acc_best after the first epoch and is stopped by the search's pruner."""
    from hydra.core.hydra_config import HydraConfig

    from src.train import train

    url = f"sqlite:///{tmp_path / 'study.db'}"
    trial = optuna.create_study(study_name="job", storage=url, direction="maximize").ask()
    monkeypatch.setenv(STORAGE_ENV, url)
    monkeypatch.setenv(STUDY_ENV, "job")
    monkeypatch.setenv(TRIAL_ID_ENV, str(trial._trial_id))
    cfg = compose_config(
        "train.yaml",
        [
            TINY_SPLIT,
            "hparams_search=mnist_optuna",
            "trainer.max_epochs=3",
            "+trainer.limit_train_batches=3",
            "hydra.sweeper.pruner=null",  # prune every trial after its first epoch:
            "hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, lower: 1.01}",
        ],
    )
    tune_for_tests(cfg, tmp_path)
    HydraConfig().set_config(cfg)
    with pytest.raises(optuna.TrialPruned, match="at epoch 0"):
        train(cfg)
    stored = optuna.load_study(study_name="job", storage=url).trials[0]
    assert list(stored.intermediate_values) == [0]
    assert 0 < stored.intermediate_values[0] <= 1


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize("name", SEARCH_CONFIGS)
def test_search_configs_compose_and_search_existing_keys(name: str) -> None:
    """Every hparams_search config composes, and each searched key exists in the config."""
    cfg = compose_config("train.yaml", [f"hparams_search={name}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("lhte_optuna_sweeper.optuna_sweeper.OptunaSweeper")
    assert cfg.callbacks.optuna_pruning.monitor == cfg.optimized_metric == "val/acc_best"
    assert sweeper.study_name == name and sweeper.direction == "maximize"
    space = space_of(*(f"{k}={v}" for k, v in sweeper.params.items()))
    assert {"model.optimizer.lr", "data.batch_size"} <= set(space.distributions)
    for key in space.distributions:
        assert OmegaConf.select(cfg, key, throw_on_missing=True) is not None, key


# ---------------------------------------------------------------- end to end (slow)
PYTHON = sys.executable
SMALL = [
    TINY_SPLIT,
    "trainer=cpu",
    "extras.print_config=false",
    "extras.enforce_tags=false",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
]


def train_multirun(*overrides: str, cwd: Path = ROOT, timeout: int = 600) -> str:
    """Run ``src/train.py -m`` in a subprocess; return its output (assert it succeeded)."""
    command = [PYTHON, str(ROOT / "src" / "train.py"), "-m", *SMALL, *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def optuna_run(tmp_path: Path, name: str, *overrides: str) -> list[str]:
    """Overrides of a small Optuna search on the SQLite study ``tmp_path/study.db``."""
    return [
        "hparams_search=mnist_optuna",
        f"hydra.sweep.dir={tmp_path / name}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}",
        "hydra.sweeper.study_name=test",
        "test=false",
        *overrides,
    ]


@pytest.mark.slow
def test_basic_multirun_over_two_learning_rates(tmp_path: Path) -> None:
    """The original template's sweep test."""
    train_multirun(
        "model.optimizer.lr=0.005,0.01",
        "++trainer.fast_dev_run=true",
        f"hydra.sweep.dir={tmp_path}",
    )
    lrs = sorted(
        OmegaConf.load(p).model.optimizer.lr for p in tmp_path.glob("*/.hydra/config.yaml")
    )
    assert lrs == [0.005, 0.01]


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_multirun(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    train_multirun(
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "model.optimizer.lr=0.005,0.01",
        "++trainer.fast_dev_run=true",
        f"hydra.sweep.dir={tmp_path}",
    )
    logs = sorted(tmp_path.glob("*/train.log"))
    assert len(logs) == 2 and all("Output dir" in p.read_text() for p in logs)
    assert len(list((tmp_path / ".submitit").glob("*/*_result.pkl"))) == 2


@pytest.mark.slow
def test_trials_launched_by_submitit_are_pruned_through_the_storage(tmp_path: Path) -> None:
    """Two trials at once in submitit's own processes: each job reaches its trial through the
    SQLite study, reports its first epoch and is pruned; the sweeper records them PRUNED."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    train_multirun(
        *optuna_run(
            tmp_path,
            "search",
            "hydra/launcher=submitit_local",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.pruner=null",  # prune every trial after its first epoch:
            "hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, lower: 1.01}",
            "++trainer.limit_train_batches=3",
            "trainer.max_epochs=3",
        )
    )
    trials = load(tmp_path).trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert all(list(t.intermediate_values) == [0] for t in trials)
    assert len(list((tmp_path / "search" / ".submitit").glob("*/*_result.pkl"))) == 2


@pytest.mark.slow
def test_optuna_search_with_pruning_end_to_end(tmp_path: Path) -> None:
    """3 trials, 3 epochs each; a hopeless learning rate is pruned after its first epoch.

    The search runs from another working directory, so plugin discovery does not depend on it.
    """
    train_multirun(
        *optuna_run(
            tmp_path,
            "search",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.params=null",  # null first: replace the dict instead of merging
            "hydra.sweeper.params={model.optimizer.lr: 'choice(0.01, 0.000001)'}",
            "hydra.sweeper.sampler.seed=0",  # tries 1e-6, 0.01, 1e-6
            "hydra.sweeper.pruner=null",
            "hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, lower: 0.5}",
            "data.batch_size=32",
            "++trainer.limit_train_batches=20",
            "trainer.max_epochs=3",
        ),
        cwd=tmp_path,
    )
    trials = load(tmp_path).trials
    assert len(trials) == 3
    lrs = {t.params["model.optimizer.lr"] for t in trials}
    assert lrs == {0.01, 0.000001}, "seed 0 should try both learning rates"
    for trial in trials:
        hopeless = trial.params["model.optimizer.lr"] < 0.001
        assert trial.state == (TrialState.PRUNED if hopeless else TrialState.COMPLETE)
        assert list(trial.intermediate_values) == ([0] if hopeless else [0, 1, 2])
    assert (tmp_path / "search" / "optimization_results.yaml").exists()


@pytest.mark.slow
def test_resumed_study_runs_only_the_missing_trials(tmp_path: Path) -> None:
    fast = ["trainer.max_epochs=1", "++trainer.limit_train_batches=2"]
    train_multirun(*optuna_run(tmp_path, "first", "hydra.sweeper.n_trials=2", *fast))
    train_multirun(*optuna_run(tmp_path, "resumed", "hydra.sweeper.n_trials=4", *fast))
    assert states(load(tmp_path)) == ["COMPLETE"] * 4
    assert sorted(p.name for p in (tmp_path / "resumed").glob("trial_*")) == [
        "trial_002",
        "trial_003",
    ]


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path: Path) -> None:
    """Two processes on one study: every trial number once, n_trials finished, none lost."""
    fast = ["trainer.max_epochs=1", "++trainer.limit_train_batches=2", "hydra.sweeper.n_trials=6"]
    command = [PYTHON, str(ROOT / "src" / "train.py"), "-m", *SMALL, *fast]
    workers = [
        subprocess.Popen(
            [*command, *optuna_run(tmp_path, f"worker{i}", f"hydra.sweeper.sampler.seed={i}")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs[0][-3000:] + outputs[1][-3000:]
    assert_shared_study_is_consistent(load(tmp_path), n_trials=6)
