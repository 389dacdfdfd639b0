"""Checks that run before the Trainer is built, so a mismatch fails in seconds, not mid-run.

:func:`check_model_matches_data` compares what the datamodule yields (image shape, heads and
their class counts: class attributes and properties, nothing is loaded) with what the model
accepts and predicts, by running the network once on a zero batch of the data's image shape and
computing every head's loss on it.
"""

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from lightning import LightningDataModule, LightningModule

from src.utils.data_description import describe

MODEL_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"

# (image shape, {head: classes}) -> name prefix of the model configs built for that data.
_CONFIG_FAMILIES: list[tuple[tuple[int, int, int], dict[str, int], str, tuple[str, ...]]] = [
    ((1, 28, 28), {"label": 10}, "mnist_", ("multihead",)),
    ((3, 32, 32), {"label": 10}, "cifar10_", ()),
    ((3, 32, 32), {"label": 100}, "cifar100_", ("coarse",)),
    ((3, 32, 32), {"label": 20}, "cifar100_coarse_", ()),
]


def fitting_model_configs(input_shape: tuple[int, ...], heads: Mapping[str, int]) -> list[str]:
    """Names of the ``configs/model`` files made for data of this shape and these heads."""
    names = sorted(p.stem for p in MODEL_CONFIGS.glob("*.yaml"))
    if len(heads) > 1:
        return [n for n in names if "multihead" in n]
    classes = next(iter(heads.values()), 0)
    for shape, family_heads, prefix, exclude in _CONFIG_FAMILIES:
        if tuple(input_shape) == shape and classes == family_heads["label"]:
            return [n for n in names if n.startswith(prefix) and not any(e in n for e in exclude)]
    return []


def _fix_hint(input_shape: tuple[int, ...], heads: Mapping[str, int]) -> str:
    fitting = fitting_model_configs(input_shape, heads)
    hint = f"model configs made for this data: {', '.join(fitting)}; " if fitting else ""
    return (
        f"Fix: pick a model that fits the data ({hint}or the experiment=... that pairs them), "
        "or set the network's input and classes to the data's: model.net.in_channels / "
        "image_size (input_size for SimpleDenseNet), model.net.num_classes (output_size) or "
        "model.net.heads_config."
    )


def heads_of(datamodule: LightningDataModule) -> dict[str, int]:
    """``{head: classes}`` the datamodule yields, from its description."""
    return describe(datamodule).heads


def _heads_mismatch(model_heads: Mapping[str, int], data_heads: Mapping[str, int]) -> str | None:
    """Why the model's heads cannot learn the data's labels, or ``None`` if they fit."""
    known = {h: n for h, n in data_heads.items() if n > 0}  # 0: not known before setup
    if not known:
        return None
    if len(model_heads) == 1 and len(data_heads) == 1:
        (model_n,) = model_heads.values()
        data_n = next(iter(data_heads.values()))
        if data_n and model_n != data_n:
            return f"the model predicts {model_n} classes but the data has {data_n}"
        return None
    if set(model_heads) != set(data_heads):
        return f"the model's heads {list(model_heads)} are not the data's heads {list(data_heads)}"
    wrong = {h: (model_heads[h], n) for h, n in known.items() if model_heads[h] != n}
    if wrong:
        return "class counts differ: " + ", ".join(
            f"head '{h}' predicts {m} classes, the data has {d}" for h, (m, d) in wrong.items()
        )
    return None


@torch.no_grad()
def check_model_matches_data(model: LightningModule, datamodule: LightningDataModule) -> None:
    """Raise ``ValueError`` if ``model`` cannot train on ``datamodule``'s images and labels.

    Checks, without loading the dataset: the network accepts images of the data's
    ``input_shape``; its heads and their class counts equal the data's ``heads``; every head's
    loss can be computed on the network's output with integer targets.

    :param model: The LightningModule (a :class:`ClassifierLitModule` or any module whose
        ``forward`` takes an image batch); CPU-only work on a batch of two zero images.
    :param datamodule: A datamodule with ``input_shape`` and ``heads`` (``{head: classes}``).
    :raises ValueError: naming the data's shape/heads, the model's, and the configs that fit.
    """
    description = describe(datamodule)
    input_shape, data_heads = description.input_shape, description.heads
    data_name = type(datamodule).__name__
    data_desc = f"{data_name} yields images {input_shape} with heads {data_heads}"
    model_heads = dict(getattr(model, "heads", {}) or {})

    mismatch = _heads_mismatch(model_heads, data_heads) if model_heads else None
    if mismatch:
        raise ValueError(
            f"Model and data do not match: {mismatch}. {data_desc}; the model "
            f"({type(model).__name__} with {type(getattr(model, 'net', model)).__name__}) has "
            f"heads {model_heads}. {_fix_hint(input_shape, data_heads)}"
        )
    if len(input_shape) != 3 or 0 in input_shape:
        return  # shape known only after setup (image folders without image_size)

    was_training = model.training
    model.eval()  # batch-norm statistics stay untouched; dropout is off
    try:
        device = next(model.parameters(), torch.empty(0)).device
        x = torch.zeros(2, *input_shape, device=device)
        forward = getattr(model, "forward_heads", model)
        try:
            out = forward(x)
        except (RuntimeError, ValueError, TypeError, AssertionError) as err:
            raise ValueError(
                f"Model and data do not match: the network fails on a batch of the data's images "
                f"{input_shape} ({type(err).__name__}: {str(err).splitlines()[0]}). {data_desc}. "
                f"{_fix_hint(input_shape, data_heads)}"
            ) from err
        logits = out if isinstance(out, Mapping) else {next(iter(model_heads), "label"): out}
        sizes = {h: int(y.shape[-1]) for h, y in logits.items()}
        if model_heads and sizes != {h: model_heads[h] for h in sizes}:
            raise ValueError(
                f"The network returns {sizes} logits per head but the module expects "
                f"{model_heads}. {_fix_hint(input_shape, data_heads)}"
            )
        _check_losses(model, logits)
    finally:
        model.train(was_training)


def _check_losses(model: LightningModule, logits: Mapping[str, torch.Tensor]) -> None:
    """Have each head's loss check itself on the network's class count, to catch e.g. a class
    ``weight`` whose length is not the class count. The loss runs only for a class count its
    own dry run (when it was built) did not cover; losses without ``check_classes`` (not
    wrapped by ``ClassificationLoss``) are not checked."""
    for head, criterion in (getattr(model, "criteria", None) or {}).items():
        check = getattr(criterion, "check_classes", None)
        if check is not None:
            check(int(logits[head].shape[-1]), head)


def prepare_data_early(datamodule: LightningDataModule, stage: str = "fit") -> None:
    """Download, decode and split the data now, before the Trainer starts, so that data problems
    (missing or corrupt files, bad labels, impossible split sizes) fail first, with nothing else
    built. Only the process Lightning would prepare data in (local rank 0) does it; the Trainer
    later finds everything done (``prepare_data`` and ``setup`` are idempotent)."""
    local_rank = os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
    if local_rank != "0":
        return
    datamodule.prepare_data()
    datamodule.setup(stage)


def described_without_files(datamodule: LightningDataModule) -> bool:
    """Whether the datamodule states its input shape and class counts before reading any file
    (MNIST and CIFAR from class attributes): then a model that does not fit can be refused even
    before the data is fetched."""
    description = describe(datamodule)
    shape, heads = description.input_shape, description.heads
    return len(shape) == 3 and all(shape) and bool(heads) and all(heads.values())
