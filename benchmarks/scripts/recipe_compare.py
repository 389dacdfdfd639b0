"""Test accuracy of training recipes against each other, measured the same day, same seeds.

Each comparison is a list of named variants (extra command-line overrides on one base command).
Every variant is trained once per seed from the command line (``python src/train.py ...``) and
its test metrics are read from the run's ``run_info.yaml``. Variants alternate within each seed,
so a change in machine load hits all of them alike (accuracies do not depend on load; wall times
do, and are recorded with the load average beside them).

    python benchmarks/scripts/recipe_compare.py mnist_ema --out benchmarks/results/mnist_ema.json
    python benchmarks/scripts/recipe_compare.py cifar_strong --out benchmarks/results/cifar_strong.json
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.lib.configs import ROOT  # noqa: E402
from benchmarks.lib.report import git_commit, run_metrics, train_command, write_json  # noqa: E402

CIFAR_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tgz"

#: name -> (base overrides, {variant: extra overrides}, seeds, what it shows)
COMPARISONS: dict[str, tuple[list[str], dict[str, list[str]], list[int], str]] = {
    "mnist_ema": (
        ["experiment=mnist_cnn_speedrun", "logger=csv"],
        {
            "speedrun": [],
            "+ EMA (decay 0.999, warm-up: the config's default)": ["callbacks=ema"],
            "+ EMA (decay 0.999, no warm-up)": ["callbacks=ema", "callbacks.ema.warmup=false"],
            "+ EMA (decay 0.99, no warm-up)": [
                "callbacks=ema",
                "callbacks.ema.decay=0.99",
                "callbacks.ema.warmup=false",
            ],
        },
        [1, 2, 3],
        "The MNIST speedrun (one epoch, 430 steps) with and without an EMA of the weights.",
    ),
    "cifar_strong": (
        [
            "experiment=cifar10_cnn_benchmark",
            "model/net=cnn_68k",
            "trainer.max_epochs=10",
            "data=cifar10_jpeg",
            f"data.archive={CIFAR_ARCHIVE}",
            "logger=csv",
        ],
        {
            "current recipe": [],
            "recipe=cifar_strong": ["recipe=cifar_strong"],
        },
        [12345],
        "SimpleCNN 68K preset on the CIFAR-10 JPEG copy, 10 epochs: the benchmark's recipe against "
        "recipe=cifar_strong (EMA, warm-up + cosine, MixUp/CutMix, TrivialAugment, flip TTA).",
    ),
}


def train(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """Train one variant from the command line; its test metrics, wall time and load."""
    command = train_command(*overrides, f"hydra.run.dir={run_dir}")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    metrics = {
        k: round(float(v), 4) for k, v in run_metrics(run_dir).items() if k.startswith("test/")
    }
    return {"test_metrics": metrics, "wall_s": round(wall, 1), "load_average": os.getloadavg()}


def compare(name: str) -> dict[str, Any]:
    """Run every variant of comparison ``name`` for every seed; a JSON-ready report."""
    base, variants, seeds, what = COMPARISONS[name]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for variant, extra in variants.items():
                overrides = [*base, *extra, f"seed={seed}"]
                result = train(overrides, Path(tmp) / f"{len(runs[variant])}_{hash(variant)}")
                shown = " ".join(["python src/train.py", *overrides]).replace(
                    str(ROOT.parent), ".."
                )
                runs[variant].append({"seed": seed, "command": shown, **result})
                print(f"{variant} seed {seed}: {result['test_metrics']}", flush=True)
    summary = {
        v: {
            "test_acc_mean": round(statistics.mean(r["test_metrics"]["test/acc"] for r in rs), 4),
            "test_acc_by_seed": [r["test_metrics"]["test/acc"] for r in rs],
        }
        for v, rs in runs.items()
    }
    return {"comparison": name, "what": what, "summary": summary, "runs": runs}


def main() -> None:
    """Parse the command line, run one comparison, print and optionally save its report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparison", choices=sorted(COMPARISONS))
    parser.add_argument("--out", type=Path, help="write the report here as JSON")
    args = parser.parse_args()
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "code": git_commit(),
        "machine": {"cpu_count": os.cpu_count(), "load_average_before": os.getloadavg()},
        **compare(args.comparison),
    }
    print(json.dumps(report["summary"], indent=1))
    if args.out:
        write_json(args.out, report, indent=1)


if __name__ == "__main__":
    main()
