"""CIFAR-100: 100 fine classes grouped into 20 coarse superclasses, both from the official files."""

import torch

from src.data.cifar_datamodule import CIFARDataModule
from src.data.components.cifar_source import CIFAR100, ensure_cifar, load_cifar_split


class CIFAR100DataModule(CIFARDataModule):
    """CIFAR-100: 50,000 training and 10,000 test images, 32x32 RGB.

    ``label_mode``: ``"fine"`` (default, 100 classes), ``"coarse"`` (20 superclasses) or
    ``"both"`` (multihead: ``{fine: ..., coarse: ...}``, heads ``{fine: 100, coarse: 20}``).
    Both label sets come from the official files (torchvision's ``CIFAR100`` exposes only the
    fine one); class names come from the ``meta`` file.
    """

    source = CIFAR100
    label_modes = {"fine": ("fine",), "coarse": ("coarse",), "both": ("fine", "coarse")}
    head_sizes = {"fine": 100, "coarse": 20}
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)

    def fine_to_coarse(self) -> torch.Tensor:
        """``(100,)`` tensor: the superclass of every fine class, read off the training labels.

        Every fine class belongs to exactly one superclass in the official files; a conflict
        means the files are not CIFAR-100 and raises ``ValueError``.
        """
        folder = ensure_cifar(self.hparams.data_dir, self.source, download=self.hparams.download)
        _images, labels = load_cifar_split(folder, self.source, train=True)
        fine, coarse = labels["fine"], labels["coarse"]
        mapping = torch.full((self.head_sizes["fine"],), -1, dtype=torch.int64)
        mapping[fine] = coarse
        if not torch.equal(mapping[fine], coarse):
            raise ValueError("Some fine classes map to several coarse classes: not CIFAR-100.")
        return mapping


if __name__ == "__main__":
    _ = CIFAR100DataModule()
