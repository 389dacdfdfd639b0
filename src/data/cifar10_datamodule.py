"""CIFAR-10: 50,000 training and 10,000 test images, 32x32 RGB, 10 classes (official pickles).

A second head "kind" (animal or vehicle), derived from the class, serves multihead experiments.
The generic CIFAR datamodule it specialises is in :mod:`src.data.cifar_datamodule`.
"""

from collections.abc import Mapping

import torch

from src.data.cifar_datamodule import CIFAR_SPLIT, CIFARDataModule
from src.data.components.cifar_source import CIFAR10

__all__ = ["CIFAR_SPLIT", "CIFAR10DataModule", "CIFARDataModule", "VEHICLES"]

# CIFAR-10 classes that are vehicles; the other six are animals.
VEHICLES = ("airplane", "automobile", "ship", "truck")


class CIFAR10DataModule(CIFARDataModule):
    """CIFAR-10: 50,000 training and 10,000 test images, 32x32 RGB, 10 classes.

    ``label_mode``: ``"class"`` (default, 10 classes), ``"kind"`` (animal or vehicle) or
    ``"both"`` (multihead: ``{class: ..., kind: ...}``, heads ``{class: 10, kind: 2}``).
    """

    source = CIFAR10
    label_modes = {"class": ("class",), "kind": ("kind",), "both": ("class", "kind")}
    head_sizes = {"class": 10, "kind": 2}
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def derive_labels(
        self, labels: Mapping[str, torch.Tensor], names: Mapping[str, list[str]]
    ) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
        """Add the ``kind`` head: 1 for the four vehicle classes, 0 for the six animals."""
        is_vehicle = torch.tensor([n in VEHICLES for n in names["class"]], dtype=torch.int64)
        labels = {**labels, "kind": is_vehicle[labels["class"].clamp(0, len(is_vehicle) - 1)]}
        return labels, {**names, "kind": ["animal", "vehicle"]}


if __name__ == "__main__":
    _ = CIFAR10DataModule()
