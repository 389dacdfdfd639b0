"""Markdown table of the architecture zoo: parameters, MNIST test accuracy and training speed.

Every model config is composed through ``configs/train.yaml`` exactly as
``python src/train.py model=<name>`` does, so the numbers belong to the configs users run. All
models train with the same recipe (the shared ``classifier.yaml`` optimizer and schedule, the
``data=mnist`` pipeline, one seed); extra Hydra overrides after ``--`` apply to every run.

Examples::

    python benchmarks/scripts/architecture_table.py --no-train --all     # parameter counts only
    python benchmarks/scripts/architecture_table.py --presets \\
        --output benchmarks/results/model_presets.md --counts benchmarks/results/model_presets.json
    python benchmarks/scripts/architecture_table.py --epochs 3           # one model per family
    python benchmarks/scripts/architecture_table.py --epochs 1 --configs mnist_cnn_8k \\
        --limit-train-batches 50 --output benchmarks/results/architectures.md -- data.batch_size=256
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.lib.configs import ROOT, compose_train, count_parameters, fitted_model  # noqa: E402
from benchmarks.lib.model_presets import PRESET_DATA, preset_rows, presets_markdown  # noqa: E402
from benchmarks.lib.report import (  # noqa: E402
    command_line,
    load_rows,
    markdown_table,
    save_rows,
    write_generated_markdown,
    write_json,
)

#: One representative model per family, trained when no ``--configs`` are given.
DEFAULT_CONFIGS = (
    "mnist_sdn_68k",
    "mnist_cnn_421k",
    "mnist_efficientnet_210k",
    "mnist_vit_210k",
    "mnist_convnext_73k",
)
#: Family names by network class.
FAMILIES = {
    "SimpleDenseNet": "SimpleDenseNet",
    "SimpleCNN": "SimpleCNN",
    "SimpleEfficientNet": "EfficientNet",
    "VisionTransformer": "ViT",
    "ConvNeXtV2": "ConvNeXt-V2",
}
FAMILY_ORDER = list(FAMILIES.values())
#: The family configs (``model=<name>``, shapes from the data) and their family names.
FAMILY_CONFIGS = {
    "sdn": "SimpleDenseNet",
    "cnn": "SimpleCNN",
    "efficientnet": "EfficientNet",
    "vit": "ViT",
    "convnext": "ConvNeXt-V2",
}


def all_model_configs() -> list[str]:
    """Every model config except the shared base, sorted by name."""
    return sorted(
        p.stem for p in (ROOT / "configs" / "model").glob("*.yaml") if p.stem != "classifier"
    )


def compose(name: str, overrides: list[str], hydra_node: bool = False) -> Any:
    """Compose ``train.yaml`` with ``model=<name>``, MNIST data and the extra overrides."""
    return compose_train([f"model={name}", "data=mnist", *overrides], hydra_node)


def describe(name: str, overrides: list[str]) -> dict[str, Any]:
    """Build ``model=<name>`` and return its family, parameter count and intended input
    (shape keys a config leaves unset are MNIST's)."""
    from types import SimpleNamespace

    model = fitted_model(compose(name, overrides).model, SimpleNamespace(**PRESET_DATA["MNIST"]))
    net = model.net
    channels = getattr(net, "in_channels", 1)
    size = getattr(net, "image_size", 28)
    return {
        "family": FAMILIES.get(type(net).__name__, type(net).__name__),
        "config": name,
        "params": count_parameters(net),
        "input": f"{channels}x{size}x{size}",
        "heads": model.heads,
        "model": model,
    }


def train_and_test(
    row: dict[str, Any], overrides: list[str], epochs: int, seed: int, limit_train_batches: float
) -> dict[str, Any]:
    """Train the row's model on MNIST; add test accuracy and training images per second."""
    import hydra
    import lightning as L
    import torch

    from benchmarks.lib.clocks import TrainStepTimer, bare_trainer

    cfg = compose(row["config"], overrides)
    L.seed_everything(seed, workers=True)
    data = hydra.utils.instantiate(cfg.data)
    model = fitted_model(cfg.model, data)  # fresh weights after seeding
    timer = TrainStepTimer()
    trainer = bare_trainer(
        max_epochs=epochs,
        accelerator=cfg.trainer.get("accelerator", "auto"),
        devices=1,
        limit_train_batches=limit_train_batches,
        callbacks=[timer],
    )
    torch.set_float32_matmul_precision("high")
    started = time.perf_counter()
    trainer.fit(model, datamodule=data)
    fit_seconds = time.perf_counter() - started
    (metrics,) = trainer.test(model, datamodule=data, verbose=False)
    head = next(iter(row["heads"]))
    key = "test/acc" if len(row["heads"]) == 1 else f"test/{head}_acc"
    return {
        **row,
        "test_acc": metrics[key],
        "epochs": epochs,
        "images_per_s": timer.images / max(timer.seconds, 1e-9),
        "fit_seconds": fit_seconds,
        "device": str(trainer.strategy.root_device),
    }


def markdown(rows: list[dict[str, Any]], trained: bool) -> str:
    """Render the rows as a Markdown table, grouped by family and sorted by size."""
    rows = sorted(
        rows,
        key=lambda r: (
            FAMILY_ORDER.index(r["family"]) if r["family"] in FAMILY_ORDER else 99,
            r["params"],
            r["config"],
        ),
    )
    header = ["Family", "Config", "Parameters", "Input"]
    if trained:
        header += ["MNIST test acc", "Epochs", "Train img/s", "Fit time"]
    cells = []
    for r in rows:
        row = [r["family"], f"`{r['config']}`", f"{r['params']:,}", r["input"]]
        if trained and "test_acc" in r:
            row += [
                f"{100 * r['test_acc']:.2f}%",
                str(r["epochs"]),
                f"{r['images_per_s']:,.0f}",
                f"{r['fit_seconds']:.0f} s",
            ]
        elif trained:
            row += [r.get("note", "-"), "-", "-", "-"]
        cells.append(row)
    return "\n".join(markdown_table(header, cells))


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Command-line options; everything after ``--`` is a Hydra override for every run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # argparse puts everything after a bare ``--`` into this positional
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, after --")
    parser.add_argument("--configs", nargs="+", help="model configs (default: one per family)")
    parser.add_argument("--all", action="store_true", help="every model config")
    parser.add_argument("--no-train", action="store_true", help="only count parameters (fast)")
    parser.add_argument(
        "--presets",
        action="store_true",
        help="count every family config's size presets on MNIST and CIFAR-10 shapes (no training)",
    )
    parser.add_argument("--counts", type=Path, help="with --presets: also write the rows as JSON")
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        help="configs listed in the table without training (e.g. too slow for this machine)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per model (3)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of every run (12345)")
    parser.add_argument(
        "--limit-train-batches",
        type=float,
        default=1.0,
        help="fraction (<= 1) or number (> 1) of training batches per epoch (quick checks)",
    )
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--results",
        type=Path,
        help="JSON file of measured rows: each model's row is saved as soon as it is measured, "
        "and rows already there (same epochs, seed, limit, overrides) are reused, so an "
        "interrupted run goes on where it stopped",
    )
    args = parser.parse_args(argv)
    if args.limit_train_batches > 1:
        args.limit_train_batches = int(args.limit_train_batches)
    return args, args.overrides


def main(argv: list[str] | None = None) -> str:
    """Build the table, print it and optionally write it to ``--output``."""
    args, overrides = parse_args(argv)
    if args.presets:
        return write_presets(args, overrides, argv)
    names = args.configs or (all_model_configs() if args.all else list(DEFAULT_CONFIGS))
    recipe = {
        "epochs": args.epochs,
        "seed": args.seed,
        "limit_train_batches": args.limit_train_batches,
        "overrides": overrides,
    }
    saved = load_rows(args.results, recipe)
    rows = []
    for name in names:
        if name in saved and not args.no_train:
            print(f"{name}: reusing the row in {args.results}", file=sys.stderr, flush=True)
            rows.append(saved[name])
            continue
        row = describe(name, overrides)
        if not args.no_train:
            if row["input"] != "1x28x28":
                row["note"] = f"n/a ({row['input']} input)"
            elif name in args.skip:
                row["note"] = "not measured"
            else:
                print(f"training {name} for {args.epochs} epoch(s)...", file=sys.stderr, flush=True)
                row = train_and_test(
                    row, overrides, args.epochs, args.seed, args.limit_train_batches
                )
        row.pop("model", None)
        rows.append(row)
        if args.results and not args.no_train and "note" not in row:
            saved[name] = row
            save_rows(args.results, recipe, saved)
    table = markdown(rows, trained=not args.no_train)
    if not args.no_train:
        device = next((r["device"] for r in rows if "device" in r), "cpu")
        limit = (
            ""
            if args.limit_train_batches == 1.0
            else f", limit_train_batches={args.limit_train_batches}"
        )
        table += (
            f"\n\nSame recipe for every model (classifier.yaml defaults, data=mnist, seed "
            f"{args.seed}{limit}{', ' + ' '.join(overrides) if overrides else ''}); device: "
            f"{device}; test accuracy of the final weights; img/s counts training steps only; fit time includes validation."
        )
    print(table)
    if args.output:
        write_markdown(args.output, "Architecture zoo on MNIST", "`make arch-table`", table, argv)
    return table


def write_markdown(path: Path, title: str, maker: str, table: str, argv: list[str] | None) -> None:
    """Write ``table`` under a title and the command that made it."""
    command = command_line("architecture_table.py", argv)
    write_generated_markdown(path, title, maker, command, table)


def write_presets(args: argparse.Namespace, overrides: list[str], argv: list[str] | None) -> str:
    """The ``--presets`` table: print it, write it to ``--output`` and the rows to ``--counts``."""
    rows = preset_rows(FAMILY_CONFIGS, overrides)
    table = presets_markdown(rows)
    table += (
        "\n\nParameters of `model=<config> model/net=<preset>` with the shape keys filled from the "
        "data as `src/train.py` does: MNIST 1x28x28, CIFAR-10 3x32x32, 10 classes each."
    )
    print(table)
    if args.output:
        write_markdown(args.output, "Model size presets", "the command below", table, argv)
    if args.counts:
        write_json(args.counts, {"rows": rows})
    return table


if __name__ == "__main__":
    main()
