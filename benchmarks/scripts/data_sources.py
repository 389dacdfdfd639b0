"""The same MNIST through every data source: accuracy, first decode and epoch time.

MNIST is read through ``data=mnist`` and, as copies in other formats, through
``data=torchvision`` (the IDX files under ``data/``), ``data=hf`` (a parquet folder with ``Image``
and ``ClassLabel`` features) and ``data=arrays`` (an ``.npz``). For each source it

1. trains the same recipe from the command line (``python src/train.py ...``, fixed seed) and
   reads the test accuracy from the run's ``run_info.yaml``;
2. times the first decode into the cache (fresh cache folder) and then training epochs of the
   same network, sources alternating round by round so that load changes hit all alike.

Run it alone (no tests or trainings beside it)::

    python benchmarks/scripts/data_sources.py --out benchmarks/results/data_sources.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))  # what rootutils sets in src/train.py

#: The recipe every source trains (the default model and schedule); shape keys come from the data.
RECIPE = ["seed=12345", "logger=csv"]


def write_copies(folder: Path) -> dict[str, list[str]]:
    """MNIST as .npz and parquet copies; ``{source: its data overrides}``."""
    from src.data.components.mnist_source import ensure_mnist, load_mnist

    raw = ensure_mnist(str(ROOT / "data"), download=True, timeout=20.0)
    (x_train, y_train), (x_test, y_test) = (load_mnist(raw, train) for train in (True, False))
    npz = folder / "mnist.npz"
    np.savez(
        npz,
        x_train=x_train.numpy(),
        y_train=y_train.numpy(),
        x_test=x_test.numpy(),
        y_test=y_test.numpy(),
        class_names=np.array([str(d) for d in range(10)]),
    )
    sources = {
        "mnist": ["data=mnist"],  # 55k train / 5k val / 10k test, like val_size=5000 below
        "torchvision": ["data=torchvision", "data.dataset=MNIST", "data.val_size=5000"],
        "arrays": ["data=arrays", f"data.path={npz}", "data.val_size=5000"],
    }
    try:
        import datasets
    except ImportError:
        print("datasets is not installed (pip install -e '.[hf]'): data=hf skipped")
        return sources
    from PIL import Image

    parquet = folder / "mnist_parquet"
    parquet.mkdir()
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    for split, (x, y) in {"train": (x_train, y_train), "test": (x_test, y_test)}.items():
        rows = {"image": [Image.fromarray(img[0].numpy()) for img in x], "label": y.tolist()}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(parquet / f"{split}.parquet")
    sources["hf"] = ["data=hf", f"data.path={parquet}", "data.val_size=5000"]
    return sources


def train_accuracy(name: str, overrides: list[str], folder: Path) -> dict[str, Any]:
    """Train from the command line; the test accuracy from ``run_info.yaml``."""
    run_dir = folder / f"run_{name}"
    command = [sys.executable, "src/train.py", *overrides, *RECIPE, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    info = yaml.safe_load((run_dir / "run_info.yaml").read_text())
    shown = " ".join(["python", "src/train.py", *overrides, *RECIPE])
    return {
        "command": shown.replace(str(folder), "<tmp>").replace(str(ROOT) + "/", ""),
        "test_acc": round(float(info["metrics"]["test/acc"]), 4),
        "wall_s": round(time.perf_counter() - start, 1),
    }


def time_epochs(overrides: list[str], cache_dir: Path, epochs: int) -> tuple[float, list[float]]:
    """``(first decode seconds, [seconds per training epoch])`` of the recipe's network."""
    import hydra
    import lightning as L
    from hydra import compose, initialize_config_dir

    from src.models.build import fit_model_config, instantiate_model

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        # no validation and no plateau schedule: the clock sees training batches only
        cfg = compose("train", overrides=[*overrides, *RECIPE, "model/scheduler=none"])
    if "cache_dir" in cfg.data:  # a fresh cache: the first decode is timed (data=mnist has none)
        cfg.data.cache_dir = str(cache_dir)
    datamodule = hydra.utils.instantiate(cfg.data)
    start = time.perf_counter()
    datamodule.prepare_data()
    datamodule.setup("fit")
    decode = time.perf_counter() - start

    class EpochClock(L.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, *args: Any) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, *args: Any) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    L.seed_everything(12345, verbose=False)
    model = instantiate_model(fit_model_config(cfg.model, datamodule))
    clock = EpochClock()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        callbacks=[clock],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule)
    return decode, clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=3, help="timing rounds, sources alternating (0: no timing)"
    )
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per round")
    parser.add_argument("--skip-accuracy", action="store_true", help="only time the sources")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--only", nargs="*", help="sources to run (default: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sources = write_copies(folder)
        sources = {k: v for k, v in sources.items() if not args.only or k in args.only}
        report: dict[str, Any] = {"recipe": RECIPE, "sources": {}}
        for name, overrides in sources.items():
            entry = report["sources"].setdefault(name, {})
            if not args.skip_accuracy:
                entry.update(train_accuracy(name, overrides, folder))
                print(name, entry)
        epochs: dict[str, list[float]] = {name: [] for name in sources}
        for r in range(args.rounds):
            order = list(sources)[r % len(sources) :] + list(sources)[: r % len(sources)]
            for name in order:
                decode, seconds = time_epochs(
                    sources[name], folder / f"cache_{name}_{r}", args.epochs
                )
                report["sources"][name].setdefault("first_decode_s", []).append(round(decode, 2))
                epochs[name] += seconds[1:] if len(seconds) > 1 else seconds  # first epoch warms up
        base = statistics.median(epochs["mnist"]) if args.rounds else 0.0
        for name, seconds in epochs.items() if args.rounds else ():
            median = statistics.median(seconds)
            report["sources"][name] |= {
                "epoch_s_median": round(median, 2),
                "epoch_s": [round(s, 2) for s in seconds],
                "epoch_time_vs_mnist": round(median / base, 3),
            }
        print(json.dumps(report, indent=1))
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
