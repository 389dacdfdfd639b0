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
import gc
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

import torch  # noqa: E402

#: SimpleDenseNet, SimpleCNN and ConvNeXt on MNIST, and the CIFAR-10 CNN.
DEFAULT_MODELS = ("mnist", "mnist_cnn_421k", "mnist_convnext_73k", "cifar10_cnn_3.3m")
#: Test accuracy whose time-to-reach is measured (models missing here: none measured).
TARGET_ACCURACY = {
    "mnist": 0.975,
    "mnist_cnn_421k": 0.99,
    "mnist_convnext_73k": 0.98,
    "cifar10_cnn_3.3m": 0.80,
}


# ---------------------------------------------------------------------------- helpers
def compose(model: str, overrides: list[str]) -> Any:
    """Compose ``train.yaml`` for ``model=<name>`` with its dataset (MNIST or CIFAR-10)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    data = "cifar10" if model.startswith("cifar10") else "mnist"
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose(
            "train",
            overrides=[f"model={model}", f"data={data}", "model.scheduler=null", *overrides],
        )


def build_datamodule(cfg: Any) -> tuple[Any, str]:
    """The configured datamodule, or fake CIFAR-10 when the official files are missing."""
    import hydra

    if cfg.data._target_.endswith("CIFAR10DataModule"):
        from src.data.cifar10_datamodule import CIFAR10DataModule

        real = hydra.utils.instantiate(cfg.data, download=False)
        if not real.files_present():
            kwargs = {k: v for k, v in cfg.data.items() if k != "_target_"}
            return fake_cifar10_datamodule(**kwargs), "fake"
        assert isinstance(real, CIFAR10DataModule)
        return real, "real"
    return hydra.utils.instantiate(cfg.data), "real"


def fake_cifar10_datamodule(**kwargs: Any) -> Any:
    """CIFAR-10 datamodule serving random uint8 images (official sizes): throughput only."""
    from src.data.cifar10_datamodule import CIFAR10DataModule

    class FakeCIFAR10(CIFAR10DataModule):
        """CIFAR-10 shaped random uint8 images and labels (official sizes), for throughput only."""

        def prepare_data(self) -> None:
            """Nothing to fetch."""

        def _read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
            # Only as many images as the split asks for (the official sizes by default).
            n_train, n_val, n_test = self.hparams.train_val_test_split or (45_000, 5_000, 10_000)
            n = n_train + n_val if train else n_test
            gen = torch.Generator().manual_seed(int(train))
            images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
            return images, torch.randint(0, 10, (n,), generator=gen)

    return FakeCIFAR10(**kwargs)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Measure the peak memory of the enclosed code in MiB (``result["peak_mib"]``).

    GPU: ``torch.cuda.max_memory_allocated``. CPU: the process's resident set size sampled every
    5 ms in a thread (it includes Python, the libraries and the dataset, the same for both loops).
    """
    result: dict[str, float] = {}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        result["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["kind"] = "cuda_max_allocated"
        return
    if not Path("/proc/self/statm").exists():  # not Linux: lifetime peak from resource
        import resource

        yield result
        scale = 1 if sys.platform == "darwin" else 1024
        result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
        result["kind"] = "ru_maxrss"
        return
    peak, done = [_rss_bytes()], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()
        result["peak_mib"] = max(peak[0], _rss_bytes()) / 2**20
        result["kind"] = "rss"


def autocast(device: torch.device, precision: str) -> Any:
    """The autocast context Lightning's ``precision`` uses (none for 32-bit)."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


# ---------------------------------------------------------------------------- template
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

    from src.models.build import instantiate_model

    class StepClock(Callback):
        """Start the clock after ``warmup`` batches; stop it when training ends."""

        def __init__(self, warmup: int) -> None:
            self.warmup, self.batches, self.images = warmup, 0, 0
            self.start = self.stop = 0.0

        def on_train_batch_end(self, trainer: Any, module: Any, out: Any, batch: Any, i: int):
            self.batches += 1
            if self.batches == self.warmup:
                synchronize(device)
                self.start = time.perf_counter()
            elif self.batches > self.warmup:
                self.images += len(batch[0])

        def on_train_end(self, trainer: Any, module: Any) -> None:
            synchronize(device)
            self.stop = time.perf_counter()

    class AccuracyClock(Callback):
        """Training time (evaluation excluded) until the test accuracy first reaches ``target``."""

        def __init__(self) -> None:
            self.start = self.eval_started = 0.0
            self.eval_seconds, self.history = 0.0, []

        def on_train_start(self, trainer: Any, module: Any) -> None:
            self.start = time.perf_counter()

        def on_validation_start(self, trainer: Any, module: Any) -> None:
            synchronize(device)
            self.eval_started = time.perf_counter()

        def on_validation_end(self, trainer: Any, module: Any) -> None:
            now = time.perf_counter()
            self.eval_seconds += now - self.eval_started
            acc = float(trainer.callback_metrics["val/acc"])
            self.history.append((now - self.start - self.eval_seconds, acc))
            if target is not None and acc >= target:
                trainer.should_stop = True

    def trainer(**kwargs: Any) -> L.Trainer:
        return L.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            precision=args.precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=args.progress_bar,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            **kwargs,
        )

    L.seed_everything(args.seed, verbose=False)
    model = instantiate_model(cfg.model)
    clock = StepClock(args.warmup)
    callbacks: list[Callback] = [clock]
    if args.progress_bar:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(refresh_rate=args.refresh_rate))
    fit = trainer(max_steps=args.warmup + args.steps, limit_val_batches=0, callbacks=callbacks)
    with peak_memory(device) as memory:
        fit.fit(model, datamodule=datamodule)
    result: dict[str, Any] = {
        "images_per_s": clock.images / max(clock.stop - clock.start, 1e-9),
        "peak_mib": memory["peak_mib"],
        "memory_kind": memory["kind"],
    }
    if target is not None:
        L.seed_everything(args.seed, verbose=False)
        model = instantiate_model(cfg.model)
        accuracy = AccuracyClock()
        datamodule.data_val = datamodule.data_test  # evaluate on the official test set
        fit = trainer(max_epochs=args.max_epochs, callbacks=[accuracy])
        fit.fit(model, datamodule=datamodule)
        result.update(time_to_target(accuracy.history, target))
    return result


def time_to_target(history: list[tuple[float, float]], target: float) -> dict[str, Any]:
    """``{seconds, epoch, test_acc}`` of the first epoch reaching ``target`` (None if never)."""
    for epoch, (seconds, acc) in enumerate(history, start=1):
        if acc >= target:
            return {"time_to_target_s": seconds, "target_epoch": epoch, "test_acc": acc}
    last = history[-1][1] if history else None
    return {"time_to_target_s": None, "target_epoch": None, "test_acc": last}


# ---------------------------------------------------------------------------- plain loop
class PlainLoop:
    """The minimal PyTorch training loop the template is compared with.

    :param net: The network (already on ``device``).
    :param optimizer: Optimizer of ``net``'s parameters.
    :param criterion: Loss module.
    :param images: Training images, uint8 ``(N, C, H, W)`` on ``device``.
    :param labels: Training labels ``(N,)`` on ``device``.
    :param mean: Per-channel mean, shaped ``(1, C, 1, 1)``.
    :param std: Per-channel standard deviation, shaped ``(1, C, 1, 1)``.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: Callable[..., torch.Tensor],
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        batch_size: int,
        precision: str,
        channels_last: bool,
    ) -> None:
        self.net, self.optimizer, self.criterion = net, optimizer, criterion
        self.images, self.labels, self.mean, self.std = images, labels, mean, std
        self.batch_size, self.precision, self.channels_last = batch_size, precision, channels_last
        self.device = images.device

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalized float, in the configured memory format."""
        x = (x.float().div_(255.0) - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled epoch of ``(images, labels)`` slices."""
        order = torch.randperm(len(self.images), device=self.device)
        for i in range(0, len(order), self.batch_size):
            index = order[i : i + self.batch_size]
            yield self.images[index], self.labels[index]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step on a uint8 batch."""
        with autocast(self.device, self.precision):
            loss = self.criterion(self.net(self.prepare(x)), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def images_per_s(self, warmup: int, steps: int) -> float:
        """Training throughput over ``steps`` steps after ``warmup`` steps."""
        self.net.train()
        done, images, start = 0, 0, 0.0
        while done < warmup + steps:
            for x, y in self.batches():
                if done == warmup:
                    synchronize(self.device)
                    start = time.perf_counter()
                self.step(x, y)
                done += 1
                images += len(x) if done > warmup else 0
                if done == warmup + steps:
                    break
        synchronize(self.device)
        return images / max(time.perf_counter() - start, 1e-9)

    @torch.no_grad()
    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Test accuracy (eval mode, same precision)."""
        self.net.eval()
        correct = 0
        for i in range(0, len(images), 1000):
            with autocast(self.device, self.precision):
                logits = self.net(self.prepare(images[i : i + 1000]))
            correct += int((logits.argmax(-1) == labels[i : i + 1000]).sum())
        self.net.train()
        return correct / max(len(images), 1)

    def train_until(
        self, test: tuple[torch.Tensor, torch.Tensor], target: float, max_epochs: int
    ) -> list[tuple[float, float]]:
        """Train epoch by epoch until the test accuracy reaches ``target``: ``[(seconds, acc)]``."""
        history: list[tuple[float, float]] = []
        seconds = 0.0
        self.net.train()
        for _ in range(max_epochs):
            synchronize(self.device)
            start = time.perf_counter()
            for x, y in self.batches():
                self.step(x, y)
            synchronize(self.device)
            seconds += time.perf_counter() - start
            history.append((seconds, self.accuracy(*test)))
            if history[-1][1] >= target:
                break
        return history


def plain_run(
    cfg: Any,
    datamodule: Any,
    args: argparse.Namespace,
    device: torch.device,
    target: float | None,
) -> dict[str, Any]:
    """Throughput (and time to ``target``) of :class:`PlainLoop` for the same model and data."""
    import hydra
    import lightning as L

    from src.models.build import instantiate_model

    train, test = datamodule.data_train, datamodule.data_test
    mean = datamodule.transform.mean.to(device)
    std = datamodule.transform.std.to(device)

    def build() -> PlainLoop:
        L.seed_everything(args.seed, verbose=False)
        net = instantiate_model(cfg.model).net.to(device)  # same initial weights as the template
        if args.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if args.compile:
            net.compile()
        optimizer = hydra.utils.instantiate(cfg.model.optimizer)(params=net.parameters())
        criterion = hydra.utils.instantiate(cfg.model.criterion).to(device)
        return PlainLoop(
            net,
            optimizer,
            criterion,
            train.images.to(device),
            train.labels.to(device),
            mean,
            std,
            args.batch_size,
            args.precision,
            args.channels_last,
        )

    loop = build()
    with peak_memory(device) as memory:
        throughput = loop.images_per_s(args.warmup, args.steps)
    result: dict[str, Any] = {
        "images_per_s": throughput,
        "peak_mib": memory["peak_mib"],
        "memory_kind": memory["kind"],
    }
    if target is not None:
        loop = build()
        history = loop.train_until(
            (test.images.to(device), test.labels.to(device)), target, args.max_epochs
        )
        result.update(time_to_target(history, target))
    return result


# ---------------------------------------------------------------------------- driver
def benchmark_model(
    model: str, args: argparse.Namespace, overrides: list[str], device: torch.device
) -> dict[str, Any]:
    """Template and plain-loop figures for one model config, plus their ratios."""
    settings = [
        f"data.batch_size={args.batch_size}",
        f"model.channels_last={str(args.channels_last).lower()}",
        f"model.compile={str(args.compile).lower()}",
    ]
    cfg = compose(model, [*settings, *overrides])
    datamodule, data_kind = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    target = None
    if args.accuracy and data_kind == "real":
        target = args.target if args.target is not None else TARGET_ACCURACY.get(model)
    net = compose_net_params(cfg)
    row: dict[str, Any] = {
        "model": model,
        "network": net["network"],
        "params": net["params"],
        "data": f"{cfg.data._target_.rsplit('.', 1)[-1]} ({data_kind})",
        "train_images": len(datamodule.data_train),
        "target_acc": target,
    }
    row["plain"] = plain_run(cfg, datamodule, args, device, target)
    row["template"] = template_run(cfg, datamodule, args, device, target)
    # Throughput is the best of --repeats runs, plain and template alternating: load on a
    # shared machine comes and goes, and the fastest run is the one least disturbed by it.
    loops = {"plain": plain_run, "template": template_run}
    throughputs = {loop: [row[loop]["images_per_s"]] for loop in loops}
    for _ in range(args.repeats - 1):
        for loop, run in loops.items():
            throughputs[loop].append(run(cfg, datamodule, args, device, None)["images_per_s"])
    for loop, values in throughputs.items():
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


def compose_net_params(cfg: Any) -> dict[str, Any]:
    """Class name and trainable parameter count of the configured network."""
    import hydra

    net = hydra.utils.instantiate(cfg.model.net)
    return {
        "network": type(net).__name__,
        "params": sum(p.numel() for p in net.parameters() if p.requires_grad),
    }


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers depend on: device, threads, versions and the current load."""
    info = {
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


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
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results = []
    for model in args.models:
        print(f"benchmarking {model}...", file=sys.stderr, flush=True)
        results.append(benchmark_model(model, args, overrides, device))
    report = {
        "settings": {
            "models": args.models,
            "precision": args.precision,
            "channels_last": args.channels_last,
            "compile": args.compile,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "max_epochs": args.max_epochs,
            "progress_bar": args.progress_bar,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "overrides": overrides,
            "command": " ".join(["python", "benchmarks/scripts/benchmark_speed.py", *sys.argv[1:]])
            if argv is None
            else None,
        },
        "machine": machine_info(device),
        "load_start": load_start,
        "results": results,
    }
    render_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
