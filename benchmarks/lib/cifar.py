"""The CIFAR benchmark matrix: datasets, architectures, their experiment configs and targets,
the runs a command line asks for, and the result row of a run."""

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.lib.configs import ROOT
from benchmarks.lib.report import read_json

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


def finished(run: Run, out: Path) -> dict[str, Any] | None:
    """The stored result of a run already done with the same overrides, else ``None``."""
    result = read_json(run.run_dir(out) / "result.json")
    if result and result.get("status") == "ok" and result.get("overrides") == run.overrides:
        return result
    return None
