"""Summarise an Optuna study: a table of its trials, plots and a Markdown report.

The study is read from a sweep folder of ``python src/train.py hparams_search=...`` (its
``optuna.db``, or the storage named in its ``multirun.yaml``) or from any storage URL. Writes
``history.png`` (objective against trial, best so far), ``importances.png`` (parameter
importances, fANOVA with scikit-learn, else PED-ANOVA), ``learning_curves.png`` (the value
reported after each epoch; pruned trials stop early) and ``report.md``.

Examples::

    python benchmarks/scripts/sweep_report.py logs/train/multiruns/2026-01-01_12-00-00
    python benchmarks/scripts/sweep_report.py --storage sqlite:///logs/optuna.db \\
        --study mnist_optuna --out benchmarks/results/sweeps/mnist_optuna
"""

import argparse
import sys
import warnings
from importlib.util import find_spec
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.lib.report import markdown_table, save_figure  # noqa: E402

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def storage_of_sweep(sweep_dir: Path) -> str:
    """The storage URL a sweep folder's study lives in."""
    if (sweep_dir / "optuna.db").exists():
        return f"sqlite:///{sweep_dir.resolve() / 'optuna.db'}"
    multirun = sweep_dir / "multirun.yaml"
    storage = OmegaConf.load(multirun).hydra.sweeper.get("storage") if multirun.exists() else None
    if not storage:
        raise FileNotFoundError(
            f"{sweep_dir} has no optuna.db and its multirun.yaml names no storage: "
            "pass the folder of an Optuna search, or --storage and --study."
        )
    return str(storage)


def load_study(storage: str, study_name: str | None) -> optuna.Study:
    """Load ``study_name``, or the only study of ``storage`` when no name is given."""
    names = optuna.get_all_study_names(storage)
    if study_name is None:
        if len(names) != 1:
            raise ValueError(f"{storage} holds studies {names}: choose one with --study.")
        study_name = names[0]
    if study_name not in names:
        raise ValueError(f"No study '{study_name}' in {storage}; it holds {names}.")
    return optuna.load_study(study_name=study_name, storage=storage)


def objective_name(study: optuna.Study) -> str:
    """The metric the trials' values are (set by the sweeper), e.g. ``val/acc_best``."""
    return study.user_attrs.get("objective", "objective")


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial, or None."""
    return study.best_trial if study.get_trials(states=(TrialState.COMPLETE,)) else None


def short_names(names: list[str]) -> dict[str, str]:
    """Column titles: the last part of each dotted key (``model.optimizer.lr`` -> ``lr``)
    where that is unambiguous, the full key otherwise."""
    last = [name.rsplit(".", 1)[-1] for name in names]
    return {n: s if last.count(s) == 1 else n for n, s in zip(names, last, strict=True)}


def trials_table(study: optuna.Study) -> Table:
    """A rich table: one row per trial, the best one in bold green."""
    best = best_trial(study)
    params = short_names(sorted({name for t in study.trials for name in t.params}))
    metric = objective_name(study)
    table = Table(title=f"Study {study.study_name}: {study.direction.name.lower()} {metric}")
    for column in ("#", "state", metric, "epochs", "min", *params.values()):
        table.add_column(column, justify="left" if column == "state" else "right")
    for trial in study.trials:
        minutes = trial.duration.total_seconds() / 60 if trial.duration else None
        row = [
            str(trial.number),
            trial.state.name.lower(),
            _format(trial.value),
            str(len(trial.intermediate_values)),
            _format(minutes, ".1f"),
            *(_format(trial.params.get(name), ".3g") for name in params),
        ]
        style = "bold green" if best and trial.number == best.number else None
        table.add_row(*row, style=style)
    return table


def plot_history(study: optuna.Study, path: Path) -> None:
    """Objective of each finished trial against its number, and the best so far."""
    finished = [t for t in study.trials if t.state in FINISHED and t.value is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    for state, color in ((TrialState.COMPLETE, "tab:blue"), (TrialState.PRUNED, "tab:red")):
        trials = [t for t in finished if t.state == state]
        ax.scatter(
            [t.number for t in trials],
            [t.value for t in trials],
            c=color,
            label=f"{state.name.lower()} ({len(trials)})",
            zorder=3,
        )
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    if complete:
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        best_so_far = [pick(t.value for t in complete[: i + 1]) for i in range(len(complete))]
        ax.step([t.number for t in complete], best_so_far, where="post", c="k", label="best")
    ax.set(xlabel="trial", ylabel=objective_name(study), title=f"{study.study_name}: history")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    save_figure(fig, ax, path, dpi=120)


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Importance of each parameter for the objective (empty with fewer than 2 trials)."""
    if len(study.get_trials(states=(TrialState.COMPLETE,))) < 2:
        return {}
    evaluator = (
        optuna.importance.FanovaImportanceEvaluator(seed=0)
        if find_spec("sklearn")
        else optuna.importance.PedAnovaImportanceEvaluator()
    )
    try:
        return optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as error:  # e.g. no parameter varied
        print(f"No parameter importances: {error}")
        return {}


def plot_importances(importances: dict[str, float], title: str, path: Path) -> None:
    """Horizontal bars, most important parameter on top."""
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set(xlabel="importance", title=title)
    save_figure(fig, ax, path, dpi=120, grid="x")


def plot_learning_curves(study: optuna.Study, path: Path) -> None:
    """The value each trial reported after each epoch (what the pruner saw)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for trial in study.trials:
        if trial.intermediate_values:
            steps = sorted(trial.intermediate_values)
            pruned = trial.state == TrialState.PRUNED
            ax.plot(
                steps,
                [trial.intermediate_values[s] for s in steps],
                marker=".",
                c="tab:red" if pruned else "tab:blue",
                alpha=0.7,
            )
    ax.plot([], [], c="tab:blue", label="complete")
    ax.plot([], [], c="tab:red", label="pruned")
    ax.set(xlabel="epoch", ylabel=objective_name(study), title=f"{study.study_name}: epochs")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    save_figure(fig, ax, path, dpi=120)


def markdown(study: optuna.Study, importances: dict[str, float], images: list[str]) -> str:
    """The report: counts, best trial, top trials, importances and the plots."""
    counts = {s: len(study.get_trials(states=(s,))) for s in TrialState}
    metric = objective_name(study)
    lines = [
        f"# Optuna study `{study.study_name}`",
        "",
        f"- objective: {study.direction.name.lower()} `{metric}`",
        "- trials: " + ", ".join(f"{n} {s.name.lower()}" for s, n in counts.items() if n),
    ]
    best = best_trial(study)
    if best is not None:
        lines += [f"- best: trial {best.number}, {metric} = {best.value:.4f}", ""]
        best_values = [[f"`{name}`", _format(value)] for name, value in best.params.items()]
        lines += markdown_table(["parameter", "best value"], best_values)
        if best.user_attrs.get("output_dir"):
            lines += ["", f"Outputs of the best trial: `{best.user_attrs['output_dir']}`"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    top = sorted(complete, key=lambda t: t.value, reverse=reverse)[:10]
    if top:
        params = list(top[0].params)
        cells = [
            [str(t.number), f"{t.value:.4f}", *(_format(t.params.get(p)) for p in params)]
            for t in top
        ]
        lines += ["", "## Top trials", "", *markdown_table(["#", metric, *params], cells)]
    if importances:
        cells = [[f"`{name}`", f"{value:.3f}"] for name, value in importances.items()]
        lines += ["", "## Parameter importances", ""]
        lines += markdown_table(["parameter", "importance"], cells)
    lines += ["", "## Plots", ""] + [f"![{Path(i).stem}]({i})" for i in images]
    return "\n".join(lines) + "\n"


def _format(value: object, spec: str = ".4g") -> str:
    """A table cell: floats with ``spec``, ``-`` for none."""
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> Path:
    """Parse arguments, print the table, write plots and ``report.md``; return the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", nargs="?", type=Path, help="folder of a search (multirun)")
    parser.add_argument("--storage", help="storage URL, e.g. sqlite:///logs/optuna.db")
    parser.add_argument("--study", help="study name (default: the storage's only study)")
    parser.add_argument("--out", type=Path, help="output folder (default: <sweep_dir>/report)")
    args = parser.parse_args(argv)
    if (args.sweep_dir is None) == (args.storage is None):
        parser.error("give a sweep folder or --storage, not both")
    storage = args.storage or storage_of_sweep(args.sweep_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(storage, args.study)
    out = args.out or (
        args.sweep_dir / "report"
        if args.sweep_dir
        else Path("benchmarks/results/sweeps") / study.study_name
    )
    out.mkdir(parents=True, exist_ok=True)

    console = Console()
    # piped into a file or a CI log, rich would squeeze the table into 80 columns
    Console(width=None if console.is_terminal else 160).print(trials_table(study))
    images = ["history.png"]
    plot_history(study, out / images[0])
    with warnings.catch_warnings():  # Optuna's importance evaluators are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        importances = param_importances(study)
    if importances:
        plot_importances(
            importances,
            f"{study.study_name}: importance for {objective_name(study)}",
            out / "importances.png",
        )
        images.append("importances.png")
    if any(t.intermediate_values for t in study.trials):
        plot_learning_curves(study, out / "learning_curves.png")
        images.append("learning_curves.png")
    report = out / "report.md"
    report.write_text(markdown(study, importances, images))
    print(f"Report: {report}")
    return report


if __name__ == "__main__":
    main()
