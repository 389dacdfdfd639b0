"""The CIFAR suite's outputs: ``results.json``, ``results.csv``, PNG plots and ``report.md``."""

import csv
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.lib.cifar import CSV_FIELDS, DATASETS, EXPECTED
from benchmarks.lib.report import command_line, markdown_table, save_figure, write_json


def percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals, ``-`` for none."""
    return "-" if value is None else f"{100 * value:.2f}%"


def count(value: float | None) -> str:
    """A parameter count in thousands or millions, ``-`` for none."""
    if value is None:
        return "-"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.0f}K"


def write_tables(results: list[dict[str, Any]], out: Path) -> None:
    """``results.json`` (everything) and ``results.csv`` (one row per run, scalar fields)."""
    write_json(out / "results.json", results, newline=False)
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
        save_figure(fig, ax, out / name, dpi=110)
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
    save_figure(fig, ax, out / "val_curves.png", dpi=110)
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
        f"- Command: `{command_line('benchmark_cifar.py', argv, quote=True)}`",
        f"- Git commit: {', '.join(commits)}",
        f"- Device: {', '.join(devices)}",
        f"- Runs: {sum(r['status'] == 'ok' for r in results)} finished, {sum(r['status'] != 'ok' for r in results)} failed",
        "",
    ]
    header = (
        "experiment", "dataset", "arch", "params", "epochs", "best val acc", "test acc",
        "expected (full recipe)", "train time", "images/s", "status",
    )  # fmt: skip
    cells = []
    for r in sorted(results, key=lambda r: (r["dataset"], r["architecture"], r["experiment"])):
        low_high = EXPECTED.get((r["dataset"], r["architecture"]))
        expected = f"{low_high[0]}-{low_high[1]}%" if low_high else "-"
        train_time = "-" if r.get("train_time_s") is None else f"{r['train_time_s'] / 60:.1f} min"
        speed = "-" if r.get("images_per_s") is None else f"{r['images_per_s']:.0f}"
        epochs = f"{r['epochs']}/{r['max_epochs']}" if r.get("max_epochs") else str(r["epochs"])
        cells.append(
            [r["experiment"], r["dataset"], r["architecture"], count(r.get("parameters")), epochs]
            + [percent(r.get("best_val_acc")), percent(r.get("test_acc")), expected, train_time]
            + [speed, r["status"]]
        )
    lines += markdown_table(header, cells, align="lllrrrrlrrl")
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
