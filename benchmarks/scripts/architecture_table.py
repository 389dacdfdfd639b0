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
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

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
#: The shapes the presets are counted on, as a datamodule reports them (``fit_model_config``).
PRESET_DATA = {
    "MNIST": {"input_shape": (1, 28, 28), "heads": {"label": 10}},
    "CIFAR-10": {"input_shape": (3, 32, 32), "heads": {"label": 10}},
}


def all_model_configs() -> list[str]:
    """Every model config except the shared base, sorted by name."""
    return sorted(
        p.stem for p in (ROOT / "configs" / "model").glob("*.yaml") if p.stem != "classifier"
    )


def compose(name: str, overrides: list[str], hydra_node: bool = False) -> Any:
    """Compose ``train.yaml`` with ``model=<name>``, MNIST data and the extra overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose(
            "train",
            overrides=[f"model={name}", "data=mnist", *overrides],
            return_hydra_config=hydra_node,
        )


def fitted_model(model_cfg: Any, data: Any) -> Any:
    """The LightningModule of ``model_cfg`` with its unset shape keys filled from ``data``
    (anything with ``input_shape`` and ``heads``), as ``src/train.py`` builds it."""
    from src.models.build import fit_model_config, instantiate_model

    return instantiate_model(fit_model_config(model_cfg, data))


def count_parameters(module: Any) -> int:
    """Trainable parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


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
    from lightning import Callback

    class TrainStepTimer(Callback):
        """Sum the wall time of training steps (forward, backward, optimizer) and count images."""

        def __init__(self) -> None:
            self.seconds, self.images, self.start = 0.0, 0, 0.0

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(
            self, trainer: Any, module: Any, out: Any, batch: Any, idx: int
        ) -> None:
            self.seconds += time.perf_counter() - self.start
            self.images += len(batch[0])

    cfg = compose(row["config"], overrides)
    L.seed_everything(seed, workers=True)
    data = hydra.utils.instantiate(cfg.data)
    model = fitted_model(cfg.model, data)  # fresh weights after seeding
    timer = TrainStepTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=cfg.trainer.get("accelerator", "auto"),
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
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
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        cells = [r["family"], f"`{r['config']}`", f"{r['params']:,}", r["input"]]
        if trained:
            if "test_acc" in r:
                cells += [
                    f"{100 * r['test_acc']:.2f}%",
                    str(r["epochs"]),
                    f"{r['images_per_s']:,.0f}",
                    f"{r['fit_seconds']:.0f} s",
                ]
            else:
                cells += [r.get("note", "-"), "-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def preset_rows(overrides: list[str]) -> list[dict[str, Any]]:
    """Every size preset of ``configs/model/net/`` in its family config, counted on MNIST and
    CIFAR-10 shapes (``None`` with a note where the preset does not fit the shape)."""
    from types import SimpleNamespace

    from hydra.errors import InstantiationException

    rows = []
    for family, label in FAMILY_CONFIGS.items():
        default = compose(family, overrides, hydra_node=True).hydra.runtime.choices["model/net"]
        family_rows = []
        for preset in sorted((ROOT / "configs" / "model" / "net").glob(f"{family}_*.yaml")):
            cfg = compose(family, [f"model/net={preset.stem}", *overrides])
            row: dict[str, Any] = {"family": label, "config": family, "preset": preset.stem}
            row["default"] = preset.stem == default
            for data, shape in PRESET_DATA.items():
                try:
                    model = fitted_model(cfg.model, SimpleNamespace(**shape))
                except InstantiationException as err:  # e.g. a 7x7 patch on 32 px images
                    row[data], row[f"{data} note"] = None, str(err.__cause__ or err).split(";")[0]
                    continue
                row[data] = count_parameters(model.net)
            family_rows.append(row)
        rows += sorted(family_rows, key=lambda r: r["MNIST"])
    return rows


def presets_markdown(rows: list[dict[str, Any]]) -> str:
    """Render the preset rows: one line per family config and preset, counts per dataset."""
    header = ["Family", "Config", "Preset (`model/net=`)", *(f"{d} params" for d in PRESET_DATA)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        preset = f"`{r['preset']}`" + (" (default)" if r["default"] else "")
        counts = [
            f"{r[d]:,}" if r[d] is not None else f"n/a ({r[d + ' note']})" for d in PRESET_DATA
        ]
        lines.append(
            "| " + " | ".join([r["family"], f"`model={r['config']}`", preset, *counts]) + " |"
        )
    return "\n".join(lines)


def load_results(path: Path | None, recipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rows saved in ``path`` by an earlier run with the same recipe (else none)."""
    if path is None or not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("recipe") != recipe:
        print(f"{path} was measured with another recipe; measuring again", file=sys.stderr)
        return {}
    return {row["config"]: row for row in saved["rows"]}


def save_results(path: Path, recipe: dict[str, Any], rows: dict[str, dict[str, Any]]) -> None:
    """Write the recipe and the measured rows (plain data only) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = [{k: v for k, v in row.items() if k != "model"} for row in rows.values()]
    path.write_text(json.dumps({"recipe": recipe, "rows": plain}, indent=2) + "\n")


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
    saved = load_results(args.results, recipe)
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
            save_results(args.results, recipe, saved)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = sys.argv[1:] if argv is None else argv
    command = " ".join(["python benchmarks/scripts/architecture_table.py", *raw])
    header = f"# {title}\n\nGenerated by {maker}; do not edit by hand.\n\n```\n{command}\n```\n\n"
    path.write_text(header + table + "\n")


def write_presets(args: argparse.Namespace, overrides: list[str], argv: list[str] | None) -> str:
    """The ``--presets`` table: print it, write it to ``--output`` and the rows to ``--counts``."""
    rows = preset_rows(overrides)
    table = presets_markdown(rows)
    table += (
        "\n\nParameters of `model=<config> model/net=<preset>` with the shape keys filled from the "
        "data as `src/train.py` does: MNIST 1x28x28, CIFAR-10 3x32x32, 10 classes each."
    )
    print(table)
    if args.output:
        write_markdown(args.output, "Model size presets", "the command below", table, argv)
    if args.counts:
        args.counts.parent.mkdir(parents=True, exist_ok=True)
        args.counts.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return table


if __name__ == "__main__":
    main()
