"""Training speed of the template against a minimal plain-PyTorch loop of the same model.

For every model config the script builds the network exactly as ``python src/train.py
model=<name>`` does (Hydra compose of ``configs/train.yaml`` + ``instantiate_model`` + the
datamodule) and measures, in the same process, one after the other:

- **template**: a Lightning ``Trainer`` (no logger, no checkpointing, no progress bar, no
  model summary) fed by the project's in-memory datamodule;
- **plain**: a hand-written loop over the same uint8 training tensor: the same network (same
  initial weights), batch size, normalization, loss and optimizer, the same precision
  (``torch.autocast``) and memory format.

Figures per loop: training images/s over ``--steps`` steps after ``--warmup`` steps (the best of
``--repeats`` runs, the two loops alternating), peak memory
(``torch.cuda.max_memory_allocated`` on GPU, peak process RSS sampled during the phase on CPU),
and the training time until the test accuracy, evaluated at each epoch end, first reaches the
model's target (``--no-accuracy`` skips this). Both loops use the optimizer's constant learning
rate: the config's scheduler is dropped (it costs nothing per step, and the plain loop would
have to copy it). The ratio template/plain of the same run is robust to the load of a shared
machine; absolute numbers are not, so the JSON records the load average too.

CIFAR-10 models use the official files when ``data/cifar-10-batches-py`` exists and otherwise
random CIFAR-shaped uint8 images (marked ``"data": "fake"``): throughput does not depend on the
pixels, and no accuracy is measured on fake data.

Examples::

    python benchmarks/scripts/benchmark_speed.py                      # all models, fp32
    python benchmarks/scripts/benchmark_speed.py --models mnist_cnn_421k \\
        --precision bf16-mixed --channels-last --json benchmarks/results/speed.json
    python benchmarks/scripts/benchmark_speed.py --steps 5 --warmup 2 --no-accuracy \\
        -- data.train_val_test_split=[2000,500,1000]       # Hydra overrides after --
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

import torch  # noqa: E402

from benchmarks.lib.configs import build_datamodule, compose_model, count_parameters  # noqa: E402

# PlainLoop is imported for those who use it from this script (the tests do).
from benchmarks.lib.plain_loop import PlainLoop, plain_run  # noqa: E402, F401
from benchmarks.lib.report import command_line, write_json  # noqa: E402
from benchmarks.lib.timing import (  # noqa: E402
    alternating_rounds,
    load_average,
    machine_info,
    peak_memory,
    time_to_target,
)

#: SimpleDenseNet, SimpleCNN and ConvNeXt on MNIST, and the CIFAR-10 CNN.
DEFAULT_MODELS = ("mnist", "mnist_cnn_421k", "mnist_convnext_73k", "cifar10_cnn_3.3m")
#: Test accuracy whose time-to-reach is measured (models missing here: none measured).
TARGET_ACCURACY = {
    "mnist": 0.975,
    "mnist_cnn_421k": 0.99,
    "mnist_convnext_73k": 0.98,
    "cifar10_cnn_3.3m": 0.80,
}
#: Settings copied from the options into the JSON, in this order.
SETTINGS = (
    "models", "precision", "channels_last", "compile", "batch_size", "steps", "warmup", "repeats",
    "max_epochs", "progress_bar",
)  # fmt: skip


def template_run(
    cfg: Any,
    datamodule: Any,
    args: argparse.Namespace,
    device: torch.device,
    target: float | None,
) -> dict[str, Any]:
    """Throughput (and time to ``target``) of the template: Trainer + ClassifierLitModule."""
    import lightning as L
    from lightning import Callback

    from benchmarks.lib.clocks import AccuracyClock, StepClock, accelerator, bare_trainer
    from src.models.build import instantiate_model

    def trainer(**kwargs: Any) -> L.Trainer:
        return bare_trainer(
            accelerator=accelerator(device),
            devices=1,
            precision=args.precision,
            enable_progress_bar=args.progress_bar,
            num_sanity_val_steps=0,
            **kwargs,
        )

    L.seed_everything(args.seed, verbose=False)
    model = instantiate_model(cfg.model)
    clock = StepClock(args.warmup, device)
    callbacks: list[Callback] = [clock]
    if args.progress_bar:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(refresh_rate=args.refresh_rate))
    fit = trainer(max_steps=args.warmup + args.steps, limit_val_batches=0, callbacks=callbacks)
    with peak_memory(device) as memory:
        fit.fit(model, datamodule=datamodule)
    result: dict[str, Any] = {
        "images_per_s": clock.images_per_s,
        "peak_mib": memory["peak_mib"],
        "memory_kind": memory["kind"],
    }
    if target is not None:
        L.seed_everything(args.seed, verbose=False)
        model = instantiate_model(cfg.model)
        accuracy = AccuracyClock(target, device)
        datamodule.data_val = datamodule.data_test  # evaluate on the official test set
        fit = trainer(max_epochs=args.max_epochs, callbacks=[accuracy])
        fit.fit(model, datamodule=datamodule)
        result.update(time_to_target(accuracy.history, target))
    return result


def benchmark_model(
    model: str, args: argparse.Namespace, overrides: list[str], device: torch.device
) -> dict[str, Any]:
    """Template and plain-loop figures for one model config, plus their ratios."""
    import hydra

    settings = [
        f"data.batch_size={args.batch_size}",
        f"model.channels_last={str(args.channels_last).lower()}",
        f"model.compile={str(args.compile).lower()}",
    ]
    cfg = compose_model(model, [*settings, *overrides])
    datamodule, data_kind = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    target = None
    if args.accuracy and data_kind == "real":
        target = args.target if args.target is not None else TARGET_ACCURACY.get(model)
    net = hydra.utils.instantiate(cfg.model.net)
    row: dict[str, Any] = {
        "model": model,
        "network": type(net).__name__,
        "params": count_parameters(net),
        "data": f"{cfg.data._target_.rsplit('.', 1)[-1]} ({data_kind})",
        "train_images": len(datamodule.data_train),
        "target_acc": target,
    }
    row["plain"] = plain_run(cfg, datamodule, args, device, target)
    row["template"] = template_run(cfg, datamodule, args, device, target)
    # Throughput is the best of --repeats runs, plain and template alternating: load on a
    # shared machine comes and goes, and the fastest run is the one least disturbed by it.
    loops = {"plain": plain_run, "template": template_run}
    more = alternating_rounds(
        list(loops),
        args.repeats - 1,
        lambda loop, _: loops[loop](cfg, datamodule, args, device, None)["images_per_s"],
    )
    for loop, values in more.items():
        values = [row[loop]["images_per_s"], *values]
        row[loop] |= {"images_per_s": max(values), "images_per_s_runs": values}
    t, p = row["template"], row["plain"]
    row["ratio"] = {
        "images_per_s": t["images_per_s"] / p["images_per_s"],
        "time_to_target": (
            t["time_to_target_s"] / p["time_to_target_s"]
            if t.get("time_to_target_s") and p.get("time_to_target_s")
            else None
        ),
    }
    return row


def render_table(report: dict[str, Any]) -> None:
    """Print the results as a rich table."""
    from rich.console import Console
    from rich.table import Table

    s = report["settings"]
    table = Table(
        title=f"Training speed: template vs plain PyTorch ({s['device']}, {s['precision']}, "
        f"channels_last={s['channels_last']}, batch {s['batch_size']})"
    )
    for column in (
        "Model",
        "Params",
        "Template img/s",
        "Plain img/s",
        "Ratio",
        "Target acc",
        "Template t->acc",
        "Plain t->acc",
        "Template peak MiB",
        "Plain peak MiB",
    ):
        table.add_column(column, justify="left" if column == "Model" else "right")

    def seconds(r: dict[str, Any]) -> str:
        if r.get("time_to_target_s") is None:
            return "-" if "test_acc" not in r else f"not reached ({100 * r['test_acc']:.2f}%)"
        return f"{r['time_to_target_s']:.1f} s (ep {r['target_epoch']})"

    for row in report["results"]:
        t, p = row["template"], row["plain"]
        table.add_row(
            f"{row['model']} ({row['network']}, {row['data']})",
            f"{row['params']:,}",
            f"{t['images_per_s']:,.0f}",
            f"{p['images_per_s']:,.0f}",
            f"{row['ratio']['images_per_s']:.2f}",
            f"{100 * row['target_acc']:.1f}%" if row["target_acc"] else "-",
            seconds(t),
            seconds(p),
            f"{t['peak_mib']:,.0f}",
            f"{p['peak_mib']:,.0f}",
        )
    Console(width=None if sys.stdout.isatty() else 220).print(table)
    load = report["machine"]["load_average"]
    print(f"load average at start {report['load_start']}, at end {load}")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Command-line options; everything after ``--`` is a Hydra override for every model."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # argparse puts everything after a bare ``--`` into this positional
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every model, after --")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="model configs")
    parser.add_argument("--precision", default="32", choices=["32", "bf16-mixed"])
    parser.add_argument("--channels-last", action="store_true", help="channels-last layout")
    parser.add_argument("--compile", action="store_true", help="torch.compile both networks")
    parser.add_argument("--steps", type=int, default=100, help="timed steps (100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (10)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="throughput runs per loop, best kept (3)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (256)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda if available)")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--no-accuracy", dest="accuracy", action="store_false", help="skip time to accuracy"
    )
    parser.add_argument("--target", type=float, help="target test accuracy for every model")
    parser.add_argument("--max-epochs", type=int, default=3, help="epochs to reach target (3)")
    parser.add_argument(
        "--progress-bar", action="store_true", help="template with the rich progress bar"
    )
    parser.add_argument("--refresh-rate", type=int, default=10, help="progress bar refresh (10)")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    return args, args.overrides


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Benchmark every model, print the table, write the JSON; returns the report."""
    import warnings

    args, overrides = parse_args(argv)
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if name == "auto" else name)
    torch.set_float32_matmul_precision("high")
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*`max_epochs` was not set.*")
    load_start = load_average()
    results = []
    for model in args.models:
        print(f"benchmarking {model}...", file=sys.stderr, flush=True)
        results.append(benchmark_model(model, args, overrides, device))
    report = {
        "settings": {
            **{key: getattr(args, key) for key in SETTINGS},
            "device": str(device),
            "threads": torch.get_num_threads(),
            "overrides": overrides,
            "command": command_line("benchmark_speed.py", None) if argv is None else None,
        },
        "machine": machine_info(device),
        "load_start": load_start,
        "results": results,
    }
    render_table(report)
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
