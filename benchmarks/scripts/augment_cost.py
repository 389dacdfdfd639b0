"""Training throughput of the CIFAR CNN with each augmentation switch on, as a ratio to without.

Every variant trains ``model=cifar10_cnn_3.3m data=cifar10`` (its crop + flip included) through
the template's own path: a Lightning ``Trainer`` (no logger, checkpointing, validation or
progress bar) with the in-memory datamodule, so augmentation runs batch-wise on the training
device in ``on_after_batch_transfer`` and mixing in ``training_step``. The variants alternate
round by round and each round's throughput is divided by the baseline's of the same round, so
load changes on a shared machine hit all alike; the JSON keeps the median ratio, the per-round
ratios and the load average.

CIFAR-10 comes from ``data/cifar-10-batches-py`` when it exists, otherwise random CIFAR-shaped
uint8 images (marked ``"data": "fake"``): the cost of augmentation does not depend on pixels.

Example::

    python benchmarks/scripts/augment_cost.py --steps 20 --warmup 3 --repeats 3 \\
        --json benchmarks/results/augment_cost.json
"""

import argparse
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import torch  # noqa: E402

from benchmarks.lib.configs import build_datamodule, compose_model  # noqa: E402
from benchmarks.lib.report import write_json  # noqa: E402
from benchmarks.lib.timing import alternating_rounds, load_average, machine_info  # noqa: E402

MODEL = "cifar10_cnn_3.3m"
#: ``{variant: Hydra overrides}``; the baseline is the model's own recipe.
VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "mixup": ["model.mix={mixup_alpha:0.8}"],
    "cutmix": ["model.mix={cutmix_alpha:1.0}"],
    "mixup_or_cutmix": ["model.mix={mixup_alpha:0.8,cutmix_alpha:1.0}"],
    "randaugment": ["data.augment.policy=randaugment"],
    "trivialaugment": ["data.augment.policy=trivialaugment"],
    "autoaugment": ["data.augment.policy=autoaugment"],
    "augmix": ["data.augment.policy=augmix"],
    "random_erasing_0.25": ["data.augment.random_erasing=0.25"],
}


def images_per_s(overrides: list[str], args: argparse.Namespace, device: torch.device) -> float:
    """Training images per second over ``args.steps`` steps after ``args.warmup``."""
    import lightning as L

    from benchmarks.lib.clocks import StepClock, accelerator, bare_trainer
    from src.models.build import instantiate_model

    n_train = args.batch_size * (args.warmup + args.steps)
    cfg = compose_model(
        MODEL,
        [
            f"data.batch_size={args.batch_size}",
            f"data.train_val_test_split=[{n_train},{args.batch_size},{args.batch_size}]",
            *overrides,
        ],
    )
    datamodule, kind = build_datamodule(cfg)
    args.data_kind = kind
    L.seed_everything(args.seed, verbose=False)
    model = instantiate_model(cfg.model)
    clock = StepClock(args.warmup, device)
    trainer = bare_trainer(
        accelerator=accelerator(device),
        devices=1,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        max_steps=args.warmup + args.steps,
        callbacks=[clock],
    )
    trainer.fit(model, datamodule=datamodule)
    return clock.images_per_s


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant and round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all variants")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--note", default=None, help="free text stored in the JSON")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Alternate the variants ``--repeats`` times; report images/s and ratios to the baseline."""
    args = parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one Trainer per run
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    names = ["baseline", *[v for v in args.variants if v != "baseline"]]
    load_before = load_average()

    def measure(name: str, round_: int) -> float:
        rate = images_per_s(VARIANTS[name], args, device)
        print(f"round {round_ + 1} {name}: {rate:.1f} images/s", flush=True)
        return rate

    rates = alternating_rounds(names, args.repeats, measure)
    variants = {}
    for name in names:
        ratios = [r / b for r, b in zip(rates[name], rates["baseline"], strict=True)]
        variants[name] = {
            "overrides": VARIANTS[name],
            "images_per_s": [round(r, 1) for r in rates[name]],
            "ratio_to_baseline": round(statistics.median(ratios), 3),
            "ratios_per_round": [round(r, 3) for r in ratios],
        }
    report = {
        "model": MODEL,
        "data": getattr(args, "data_kind", "unknown"),
        "settings": {
            "batch_size": args.batch_size,
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
        },
        "machine": {**machine_info(device), "load_average_before": load_before},
        "note": args.note,
        "variants": variants,
    }
    if args.json is not None:
        write_json(args.json, report)
    for name, entry in variants.items():
        print(f"{name:>20}: {entry['ratio_to_baseline']:.3f} x baseline")
    return report


if __name__ == "__main__":
    main()
