"""Automated CIFAR benchmark suite: run a matrix of experiments, then tabulate and plot them.

Every run is ``python src/train.py experiment=<name> ...`` in its own process, so one failing run
is recorded and the suite goes on. Each run writes ``runs/<experiment>/record.json`` through the
:class:`BenchmarkRecorder` callback (parameters, device, per-epoch validation accuracy and
training throughput, test accuracy); the suite adds wall time and status in
``runs/<experiment>/result.json``, then writes ``results.json``, ``results.csv``, ``report.md``
and PNG plots into the output folder. Running again with the same ``--out`` skips finished runs.

Examples::

    python benchmarks/scripts/benchmark_cifar.py                        # every dataset x architecture
    python benchmarks/scripts/benchmark_cifar.py --quick --datasets cifar10 --archs cnn convnext
    python benchmarks/scripts/benchmark_cifar.py --experiments cifar100_cnn --epochs 3 --out /tmp/b
    python benchmarks/scripts/benchmark_cifar.py --dry-run -- trainer=gpu data.batch_size=512
    # CIFAR-10 from a JPEG image-folder copy instead of the official download (two equivalents):
    python benchmarks/scripts/benchmark_cifar.py --quick --cifar10-jpeg ../shared/data/cifar10-jpeg.tgz
    python benchmarks/scripts/benchmark_cifar.py --quick -D cifar10:data=cifar10_jpeg \\
        -D cifar10:data.archive=../shared/data/cifar10-jpeg.tgz
"""

import argparse
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ("cifar10", "cifar100", "cifar100_coarse")
ARCHS = ("cnn", "convnext", "vit", "efficientnet")
# (dataset, architecture) -> experiment config; combinations without one are not run.
EXPERIMENTS = {
    ("cifar10", "cnn"): "cifar10_cnn_benchmark",
    ("cifar10", "convnext"): "cifar10_convnext_benchmark",
    ("cifar10", "vit"): "cifar10_vit_benchmark",
    ("cifar10", "efficientnet"): "cifar10_efficientnet_benchmark",
    ("cifar100", "cnn"): "cifar100_cnn_benchmark",
    ("cifar100", "convnext"): "cifar100_convnext_benchmark",
    ("cifar100_coarse", "cnn"): "cifar100_coarse_cnn",
}
# Target test accuracy ranges for the full recipes (percent).
EXPECTED = {
    ("cifar10", "cnn"): (85, 92),
    ("cifar10", "convnext"): (90, 95),
    ("cifar10", "vit"): (88, 93),
    ("cifar10", "efficientnet"): (89, 94),
    ("cifar100", "cnn"): (55, 70),
    ("cifar100", "convnext"): (70, 80),
    ("cifar100_coarse", "cnn"): (75, 85),
}
QUICK_EPOCHS = 5
CSV_FIELDS = (
    "experiment", "dataset", "architecture", "status", "parameters", "epochs", "max_epochs",
    "best_val_acc", "test_acc", "wall_time_s", "train_time_s", "images_per_s", "device",
    "git_commit", "started", "error",
)  # fmt: skip


# ----------------------------------------------------------------------------- in the run
def _write_json(path: Path, content: Any) -> None:
    """Write atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(content, indent=2))
    partial.replace(path)


def _recorder_class() -> type:
    """Define :class:`BenchmarkRecorder`; Lightning is imported only in the runs that use it."""
    from lightning import Callback, LightningModule, Trainer

    class BenchmarkRecorder(Callback):
        """Record what the benchmark needs from inside a training run, as JSON after every epoch.

        Added to a run with ``++callbacks.benchmark_recorder._target_=<this class>
        ++callbacks.benchmark_recorder.path=<file>``. Training throughput counts the images of the
        training batches from the first batch of an epoch to its last (validation excluded).

        :param path: JSON file to (re)write.
        """

        def __init__(self, path: str) -> None:
            self.path = Path(path)
            self.record: dict[str, Any] = {"epochs": [], "test_acc": None}
            self._epoch_start = self._last_batch_end = 0.0
            self._images = 0

        @staticmethod
        def _metric(trainer: Trainer, stage: str) -> float | None:
            """``<stage>/acc`` (single head) or the first ``<stage>/<head>_acc`` (multihead)."""
            metrics = trainer.callback_metrics
            names = [f"{stage}/acc"] + sorted(
                k for k in metrics if k.startswith(f"{stage}/") and k.endswith("_acc")
            )
            return next((float(metrics[n]) for n in names if n in metrics), None)

        def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
            """Parameters, device and batch size, once."""
            import torch

            device = trainer.strategy.root_device
            name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
            if device.type == "cpu":
                name = f"cpu ({torch.get_num_threads()} threads)"
            self.record.update(
                parameters=sum(p.numel() for p in pl_module.parameters()),
                device=name,
                max_epochs=trainer.max_epochs,
            )
            _write_json(self.path, self.record)

        def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
            """Start the epoch's clock."""
            self._epoch_start = self._last_batch_end = time.perf_counter()
            self._images = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            """Count images and remember when the last training batch finished."""
            self._images += len(batch[0])
            self._last_batch_end = time.perf_counter()

        def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
            """Store the epoch's training time, throughput and validation accuracy."""
            if trainer.sanity_checking or not self._images:
                return
            seconds = self._last_batch_end - self._epoch_start
            self.record["epochs"].append(
                {
                    "epoch": trainer.current_epoch,
                    "val_acc": self._metric(trainer, "val"),
                    "train_time_s": round(seconds, 3),
                    "train_images": self._images,
                    "images_per_s": round(self._images / seconds, 1) if seconds > 0 else None,
                }
            )
            self._images = 0
            _write_json(self.path, self.record)

        def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
            """Store the test accuracy (of the best checkpoint: ``train.py`` tests it)."""
            self.record["test_acc"] = self._metric(trainer, "test")
            _write_json(self.path, self.record)

    return BenchmarkRecorder


def __getattr__(name: str) -> Any:
    """Build ``BenchmarkRecorder`` on first access (Hydra's ``_target_`` lookup in a run), so the
    suite process itself never pays Lightning's import time."""
    if name == "BenchmarkRecorder":
        globals()[name] = _recorder_class()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- the matrix
@dataclass
class Run:
    """One experiment of the matrix and the Hydra overrides it runs with."""

    experiment: str
    dataset: str
    architecture: str
    overrides: list[str] = field(default_factory=list)

    def run_dir(self, out: Path) -> Path:
        """Where the run's Hydra output, record and result go."""
        return out / "runs" / self.experiment


def describe(experiment: str) -> tuple[str, str]:
    """``(dataset, architecture)`` of an experiment name (``cifar100_coarse_cnn`` etc.)."""
    for key, name in EXPERIMENTS.items():
        if name == experiment:
            return key
    dataset = next(
        (d for d in sorted(DATASETS, key=len, reverse=True) if experiment.startswith(d)), "?"
    )
    return dataset, experiment.rsplit("_", 1)[-1]


def all_experiments() -> list[str]:
    """Every single-head CIFAR experiment config in ``configs/experiment``, trained from scratch.

    Old-name aliases (a file holding only ``defaults: [<experiment>, _self_]``) would run a
    recipe twice; multihead recipes log per-head metrics and fine-tuning needs downloaded weights.
    """
    names = []
    for path in sorted((ROOT / "configs" / "experiment").glob("cifar*.yaml")):
        lines = [
            ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")
        ]
        is_alias = len(lines) == 1 and lines[0].startswith("defaults:")
        if not is_alias and "multihead" not in path.stem and "finetune" not in path.stem:
            names.append(path.stem)
    return names


def quote(value: str) -> str:
    """Quote a Hydra override value that holds characters its grammar would misread."""
    if all(c.isalnum() or c in "/._-:+" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def plan(args: argparse.Namespace) -> tuple[list[Run], list[str]]:
    """The runs to do, and notes on requested combinations that have no experiment config."""
    notes: list[str] = []
    if args.experiments:
        names = all_experiments() if args.experiments == ["all"] else args.experiments
        runs = [Run(name, *describe(name)) for name in names]
    else:
        runs = []
        for dataset in args.datasets:
            for arch in args.archs:
                if (dataset, arch) in EXPERIMENTS:
                    runs.append(Run(EXPERIMENTS[(dataset, arch)], dataset, arch))
                else:
                    notes.append(f"{dataset} x {arch}: no experiment config, not run")
    per_dataset: dict[str, list[str]] = {}
    if args.cifar10_jpeg:
        per_dataset["cifar10"] = ["data=cifar10_jpeg", f"data.archive={quote(args.cifar10_jpeg)}"]
    for item in args.dataset_override:
        dataset, sep, override = item.partition(":")
        if not sep or dataset not in DATASETS:
            raise SystemExit(
                f"--dataset-override needs DATASET:OVERRIDE with DATASET in {DATASETS}; got {item!r}"
            )
        per_dataset.setdefault(dataset, []).append(override)
    epochs = QUICK_EPOCHS if args.quick else args.epochs
    for run in runs:
        if epochs is not None:
            run.overrides.append(f"trainer.max_epochs={epochs}")
        # Dataset-specific overrides come last: the more specific setting wins.
        run.overrides += list(args.overrides) + per_dataset.get(run.dataset, [])
    return runs, notes


def command(run: Run, out: Path) -> list[str]:
    """The ``src/train.py`` command line of a run."""
    run_dir = run.run_dir(out)
    recorder = "benchmarks.scripts.benchmark_cifar.BenchmarkRecorder"
    logger = [] if any(o.startswith("logger=") for o in run.overrides) else ["logger=csv"]
    return [
        sys.executable,
        "src/train.py",
        f"experiment={run.experiment}",
        *logger,
        f"hydra.run.dir={quote(str(run_dir))}",
        "extras.print_config=false",
        "++callbacks.rich_progress_bar=null",  # a log file is no terminal
        "++trainer.enable_progress_bar=false",
        f"++callbacks.benchmark_recorder._target_={recorder}",
        f"++callbacks.benchmark_recorder.path={quote(str(run_dir / 'record.json'))}",
        *run.overrides,
    ]


# ---------------------------------------------------------------------------- running
def git_commit() -> str:
    """Short commit hash, with ``-dirty`` when tracked files have changed."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def headline(error: str, width: int = 300) -> str:
    """The most telling line of a failure: the last exception line, else the status."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    exceptions = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line]
    line = exceptions[-1] if exceptions else lines[0]
    return line if len(line) <= width else line[: width - 3] + "..."


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or ``None`` if it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def summarize(run: Run, record: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """One result row from the run's record (missing values stay ``None``)."""
    record = record or {}
    epochs = record.get("epochs", [])
    val = [e["val_acc"] for e in epochs if e.get("val_acc") is not None]
    train_time = sum(e.get("train_time_s") or 0 for e in epochs)
    images = sum(e.get("train_images") or 0 for e in epochs)
    return {
        "experiment": run.experiment,
        "dataset": run.dataset,
        "architecture": run.architecture,
        "parameters": record.get("parameters"),
        "epochs": len(epochs),
        "max_epochs": record.get("max_epochs"),
        "best_val_acc": max(val) if val else None,
        "test_acc": record.get("test_acc"),
        "train_time_s": round(train_time, 2) if epochs else None,
        "images_per_s": round(images / train_time, 1) if train_time else None,
        "device": record.get("device"),
        "val_acc_curve": val,
        "overrides": run.overrides,
        **extra,
    }


def execute(
    run: Run, out: Path, commit: str, progress: Any, timeout: float | None
) -> dict[str, Any]:
    """Run one experiment in a subprocess, following its record for the progress bar."""
    run_dir = run.run_dir(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_path, log_path = run_dir / "record.json", run_dir / "output.log"
    record_path.unlink(missing_ok=True)
    cmd = command(run, out)
    task = progress.add_task(f"  {run.experiment}", total=None)
    started, start = datetime.now().isoformat(timespec="seconds"), time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    with open(log_path, "w") as log:
        log.write(shlex.join(cmd) + "\n\n")
        log.flush()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        status = None
        while proc.poll() is None:
            record = read_json(record_path) or {}
            done = len(record.get("epochs", []))
            last = record["epochs"][-1].get("val_acc") if done else None
            note = f" val acc {last:.3f}" if last is not None else ""
            progress.update(
                task,
                total=record.get("max_epochs"),
                completed=done,
                description=f"  {run.experiment}{note}",
            )
            if timeout and time.monotonic() - start > timeout:
                os.killpg(proc.pid, signal.SIGTERM)  # the run's own process group only
                proc.wait()
                status = f"timeout after {timeout:.0f} s"
            time.sleep(0.5)
    progress.remove_task(task)
    wall = round(time.monotonic() - start, 1)
    record = read_json(record_path)
    error = None
    if status is None and proc.returncode != 0:
        status = f"exit code {proc.returncode}"
    if status is None and (record or {}).get("test_acc") is None:
        status = "no test accuracy recorded"
    if status is not None:
        lines = log_path.read_text(errors="replace").splitlines()
        error = f"{status}; last output:\n" + "\n".join(lines[-15:])
    result = summarize(
        run,
        record,
        status="ok" if error is None else "failed",
        error=error,
        wall_time_s=wall,
        git_commit=commit,
        started=started,
        command=shlex.join(cmd),
        run_dir=str(run_dir),
    )
    _write_json(run_dir / "result.json", result)
    return result


def finished(run: Run, out: Path) -> dict[str, Any] | None:
    """The stored result of a run already done with the same overrides, else ``None``."""
    result = read_json(run.run_dir(out) / "result.json")
    if result and result.get("status") == "ok" and result.get("overrides") == run.overrides:
        return result
    return None


# ---------------------------------------------------------------------------- reporting
def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _count(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.0f}K"


def write_tables(results: list[dict[str, Any]], out: Path) -> None:
    """``results.json`` (everything) and ``results.csv`` (one row per run, scalar fields)."""
    _write_json(out / "results.json", results)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in results:
            writer.writerow({k: row.get(k) for k in CSV_FIELDS})


def write_plots(results: list[dict[str, Any]], out: Path) -> list[str]:
    """Test accuracy against parameters and against training time, and validation curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter, MaxNLocator, NullFormatter

    ok = [r for r in results if r["status"] == "ok" and r.get("test_acc") is not None]
    colors = {d: f"C{i}" for i, d in enumerate(DATASETS)}
    files = []
    for name, x_key, x_label, log_x in (
        ("test_acc_vs_params.png", "parameters", "parameters", True),
        ("test_acc_vs_time.png", "train_time_s", "training time (minutes)", False),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for r in ok:
            if r.get(x_key) is None:
                continue
            x = r[x_key] / 60 if x_key == "train_time_s" else r[x_key]
            ax.scatter(
                x, 100 * r["test_acc"], color=colors.get(r["dataset"], "k"), label=r["dataset"]
            )
            ax.annotate(
                r["architecture"],
                (x, 100 * r["test_acc"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
        handles = dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
        if handles:
            ax.legend(handles.values(), handles.keys())
        else:
            ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
        xs = [r[x_key] for r in ok if r.get(x_key)]
        if log_x and xs and max(xs) > 10 * min(xs):  # log only where sizes span a decade
            ax.set_xscale("log")
        if x_key == "parameters":
            ax.xaxis.set_major_formatter(EngFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
        ax.set(xlabel=x_label, ylabel="test accuracy (%)", title=f"Test accuracy vs {x_label}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in ok:
        curve = r.get("val_acc_curve") or []
        ax.plot(
            range(1, len(curve) + 1),
            [100 * v for v in curve],
            marker="o",
            markersize=3,
            label=r["experiment"],
        )
    if ok:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Validation accuracy per epoch")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "val_curves.png", dpi=110)
    plt.close(fig)
    return [*files, "val_curves.png"]


def write_report(
    results: list[dict[str, Any]],
    out: Path,
    plots: Sequence[str],
    argv: Sequence[str],
    notes: Sequence[str],
) -> None:
    """``report.md``: settings, the results table with the expected (target) ranges, plots, failures."""
    commits = sorted({r.get("git_commit") or "unknown" for r in results})
    devices = sorted({r["device"] for r in results if r.get("device")}) or ["-"]
    lines = [
        "# CIFAR benchmark report",
        "",
        f"- Generated: {datetime.now().isoformat(timespec='seconds')}",
        f"- Command: `{shlex.join(['python', 'benchmarks/scripts/benchmark_cifar.py', *argv])}`",
        f"- Git commit: {', '.join(commits)}",
        f"- Device: {', '.join(devices)}",
        f"- Runs: {sum(r['status'] == 'ok' for r in results)} finished, {sum(r['status'] != 'ok' for r in results)} failed",
        "",
        "| experiment | dataset | arch | params | epochs | best val acc | test acc | expected (full recipe) | train time | images/s | status |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in sorted(results, key=lambda r: (r["dataset"], r["architecture"], r["experiment"])):
        low_high = EXPECTED.get((r["dataset"], r["architecture"]))
        expected = f"{low_high[0]}-{low_high[1]}%" if low_high else "-"
        train_time = "-" if r.get("train_time_s") is None else f"{r['train_time_s'] / 60:.1f} min"
        speed = "-" if r.get("images_per_s") is None else f"{r['images_per_s']:.0f}"
        epochs = f"{r['epochs']}/{r['max_epochs']}" if r.get("max_epochs") else str(r["epochs"])
        lines.append(
            f"| {r['experiment']} | {r['dataset']} | {r['architecture']} | {_count(r.get('parameters'))} | "
            f"{epochs} | {_percent(r.get('best_val_acc'))} | {_percent(r.get('test_acc'))} | {expected} | "
            f"{train_time} | {speed} | {r['status']} |"
        )
    lines += [
        "",
        "Train time and images/s count training batches only (validation and start-up excluded); "
        "wall times are in results.csv.",
        "",
    ]
    lines += [f"![{p}]({p})" for p in plots]
    if notes:
        lines += ["", "## Not run", "", *[f"- {n}" for n in notes]]
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failures", ""]
        for r in failed:
            lines += [
                f"### {r['experiment']}",
                "",
                f"Log: `{r.get('run_dir')}/output.log`",
                "",
                "```",
                r.get("error") or "",
                "```",
                "",
            ]
    (out / "report.md").write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Options before ``--``; everything after it is passed to every run as Hydra overrides."""
    argv = list(argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Anything after -- is passed to every run, e.g. -- trainer=gpu data.batch_size=512",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=list(DATASETS),
        choices=DATASETS,
        metavar="D",
        help=f"datasets of the matrix (default: all of {', '.join(DATASETS)})",
    )
    parser.add_argument(
        "--archs",
        nargs="+",
        default=list(ARCHS),
        choices=ARCHS,
        metavar="A",
        help=f"architectures of the matrix (default: all of {', '.join(ARCHS)})",
    )
    parser.add_argument(
        "--experiments",
        nargs="+",
        metavar="NAME",
        help="explicit experiment configs instead of the matrix ('all': every configs/experiment/cifar*.yaml)",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs per run")
    parser.add_argument(
        "--epochs", type=int, help="epochs per run (default: each experiment's own)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default: benchmarks/results/<timestamp>); reuse it to resume",
    )
    parser.add_argument(
        "-D",
        "--dataset-override",
        action="append",
        default=[],
        metavar="DATASET:OVERRIDE",
        help="an override for one dataset's runs, e.g. -D cifar10:data=cifar10_jpeg (repeatable)",
    )
    parser.add_argument(
        "--cifar10-jpeg",
        metavar="ARCHIVE",
        help="CIFAR-10 runs read this image-folder .tgz (data=cifar10_jpeg), not the official files",
    )
    parser.add_argument(
        "--run-timeout", type=float, help="seconds before a run is stopped and recorded as failed"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the runs and commands, run nothing"
    )
    args = parser.parse_args(own)
    args.overrides = overrides
    args.argv = argv
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; return 0 if every run finished, 1 if any failed."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    runs, notes = plan(args)
    out = (
        args.out or ROOT / "benchmarks" / "results" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    ).resolve()
    table = Table(title=f"CIFAR benchmark: {len(runs)} run(s) -> {out}")
    for column in ("experiment", "dataset", "arch", "state"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.experiment,
            run.dataset,
            run.architecture,
            "done, skipped" if finished(run, out) else "to run",
        )
    console.print(table)
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]")
    if args.dry_run:
        for run in runs:
            console.print(shlex.join(command(run, out)), soft_wrap=True)
        return 0
    commit = git_commit()
    results = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        overall = progress.add_task("runs", total=len(runs))
        for run in runs:
            result = finished(run, out)
            if result is None:
                result = execute(run, out, commit, progress, args.run_timeout)
                if result["status"] == "ok":
                    progress.console.print(
                        f"[green]ok[/green] {run.experiment}: test acc "
                        f"{_percent(result.get('test_acc'))}, {result['wall_time_s']:.0f} s"
                    )
                else:
                    progress.console.print(
                        f"[red]FAILED[/red] {run.experiment} after {result['wall_time_s']:.0f} s: "
                        f"{headline(result['error'])}",
                        markup=False,
                    )
            else:
                progress.console.print(f"[cyan]skipped[/cyan] {run.experiment}: finished before")
            results.append(result)
            progress.advance(overall)
    out.mkdir(parents=True, exist_ok=True)
    write_tables(results, out)
    plots = write_plots(results, out)
    write_report(results, out, plots, args.argv, notes)
    console.print(f"Report: {out / 'report.md'}")
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
