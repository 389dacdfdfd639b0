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
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
# The matrix and the report live in benchmarks/lib; their names are this module's API too.
from benchmarks.lib.cifar import (  # noqa: E402, F401
    ARCHS,
    DATASETS,
    EXPECTED,
    EXPERIMENTS,
    QUICK_EPOCHS,
    ROOT,
    Run,
    all_experiments,
    describe,
    finished,
    plan,
    quote,
    summarize,
)
from benchmarks.lib.cifar_report import percent, write_plots, write_report, write_tables  # noqa: E402
from benchmarks.lib.report import git_commit, headline, read_json, write_json  # noqa: E402


def __getattr__(name: str) -> Any:
    """Import ``BenchmarkRecorder`` on first access (Hydra's ``_target_`` lookup in a run), so the
    suite process itself never pays Lightning's import time."""
    if name == "BenchmarkRecorder":
        from benchmarks.lib.cifar_recorder import BenchmarkRecorder

        globals()[name] = BenchmarkRecorder
        return BenchmarkRecorder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    write_json(run_dir / "result.json", result, newline=False)
    return result


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
    for option, names, metavar, what in (
        ("--datasets", DATASETS, "D", "datasets"),
        ("--archs", ARCHS, "A", "architectures"),
    ):
        parser.add_argument(
            option,
            nargs="+",
            default=list(names),
            choices=names,
            metavar=metavar,
            help=f"{what} of the matrix (default: all of {', '.join(names)})",
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
                        f"{percent(result.get('test_acc'))}, {result['wall_time_s']:.0f} s"
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
