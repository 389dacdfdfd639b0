"""The generic CIFAR datamodule, from torchvision's on-disk pickles, with one or several heads.

:class:`CIFARDataModule` reads torchvision's on-disk format (see
:mod:`src.data.components.cifar_source`) and turns the label sets of the files into one or more
heads through ``label_mode``. CIFAR-10 (:mod:`src.data.cifar10_datamodule`) and CIFAR-100
(:mod:`src.data.cifar100_datamodule`) set the dataset's files, heads and statistics.
"""

from collections.abc import Sequence
from typing import Any

import torch

from src.data.base_datamodule import InMemoryDataModule
from src.data.components.cifar_source import (
    CIFARFormat,
    ensure_cifar,
    load_cifar_split,
    load_class_names,
    missing_files,
)
from src.data.components.memory import Labels

# Default split: 45,000 train + 5,000 validation from the official training set; official test.
CIFAR_SPLIT = (45_000, 5_000, 10_000)


class CIFARDataModule(InMemoryDataModule):
    """Any CIFAR variant in torchvision's pickle format, with one or several label heads.

    Subclasses set :attr:`source`, :attr:`label_modes`, :attr:`head_sizes` and the default
    normalization; they may add derived heads in :meth:`derive_labels`.

    :param data_dir: Folder holding (or receiving) the extracted dataset folder.
    :param label_mode: Which heads the labels feed (a key of :attr:`label_modes`). One head gives
        plain label tensors; several give ``{head: labels}`` for a multihead network.
    :param heads: Alternative to ``label_mode``: the heads to yield, primary first (e.g.
        ``[fine, coarse]``); labels are then always ``{head: labels}`` dicts, even for one head.
    :param train_val_test_split: ``(train, val, test)`` sizes; train + val are a seeded split of
        the official training set, test is the official test set.
    :param kwargs: Everything else of :class:`~src.data.base_datamodule.InMemoryDataModule`
        (``batch_size``, ``normalize``, ``augment``, ``in_memory``, ``download``, ...).
    """

    source: CIFARFormat
    input_shape = (3, 32, 32)
    #: ``{label_mode: heads it yields}``; the first key is the default mode.
    label_modes: dict[str, tuple[str, ...]] = {}
    #: ``{head: number of classes}`` of every head a mode can name.
    head_sizes: dict[str, int] = {}
    #: Official per-channel statistics of the [0, 1]-scaled training images.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __init__(
        self,
        data_dir: str = "data/",
        label_mode: str | None = None,
        heads: Sequence[str] | None = None,
        train_val_test_split: Sequence[int] | None = CIFAR_SPLIT,
        batch_size: int = 128,
        **kwargs: Any,
    ) -> None:
        label_mode = label_mode or next(iter(self.label_modes))
        if label_mode not in self.label_modes:
            raise ValueError(
                f"{type(self).__name__}: label_mode={label_mode!r} is not one of "
                f"{list(self.label_modes)}."
            )
        unknown = [h for h in heads or [] if h not in self.head_sizes]
        if unknown or (heads is not None and not heads):
            raise ValueError(
                f"{type(self).__name__}: heads={heads} must name heads from "
                f"{list(self.head_sizes)} (e.g. {list(self.head_sizes)}), or be null."
            )
        super().__init__(
            data_dir=data_dir,
            train_val_test_split=train_val_test_split,
            batch_size=batch_size,
            **kwargs,
        )
        self.official_sizes = self.source.sizes
        #: ``{head: class names}`` of every head, filled from the meta file in :meth:`setup`.
        self.label_names: dict[str, list[str]] = {}
        self._loaded: dict[bool, tuple[torch.Tensor, Labels]] = {}

    # ------------------------------------------------------------ heads and names
    @property
    def active_heads(self) -> tuple[str, ...]:
        """Heads of ``heads`` or else of the configured ``label_mode``, primary first."""
        if self.hparams.heads:
            return tuple(self.hparams.heads)
        return self.label_modes[self.hparams.label_mode]

    @property
    def multihead(self) -> bool:
        """Whether batches carry ``{head: labels}`` dicts (several heads, or ``heads`` given)."""
        return len(self.active_heads) > 1 or bool(self.hparams.heads)

    @property
    def heads(self) -> dict[str, int]:
        """``{head: num_classes}``; a single head is called ``"label"`` like the model's."""
        if not self.multihead:
            return {"label": self.head_sizes[self.active_heads[0]]}
        return {head: self.head_sizes[head] for head in self.active_heads}

    @property
    def class_names(self) -> list[str]:
        """Class names of the primary head (from the meta file once set up)."""
        head = self.active_heads[0]
        return self.label_names.get(head) or [str(i) for i in range(self.head_sizes[head])]

    def default_normalize(self) -> dict[str, list[float]]:
        """The dataset's official per-channel statistics."""
        return {"mean": list(self.mean), "std": list(self.std)}

    def derive_labels(
        self, labels: dict[str, torch.Tensor], names: dict[str, list[str]]
    ) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
        """Add heads computed from the file's label sets (none by default)."""
        return labels, names

    # ------------------------------------------------------------------ loading
    def prepare_data(self) -> None:
        """Make sure the files are there: local copy, official archive, or torchvision download."""
        ensure_cifar(self.hparams.data_dir, self.source, download=self.hparams.download)

    def _read_split(self, train: bool) -> tuple[torch.Tensor, Labels]:
        folder = ensure_cifar(self.hparams.data_dir, self.source, download=self.hparams.download)
        images, labels = load_cifar_split(folder, self.source, train)
        labels, self.label_names = self.derive_labels(labels, load_class_names(folder, self.source))
        for head in self.active_heads:
            top = int(labels[head].max()) if len(labels[head]) else -1
            if top >= self.head_sizes[head] or (len(labels[head]) and labels[head].min() < 0):
                raise ValueError(
                    f"{folder}: '{head}' labels must lie in [0, {self.head_sizes[head]}), found "
                    f"up to {top}. The files are not {self.source.name}."
                )
        if not self.multihead:
            return images, labels[self.active_heads[0]]
        return images, {head: labels[head] for head in self.active_heads}

    def setup(self, stage: str | None = None) -> None:
        """Read both official splits once; the split sizes are checked against the files."""
        if self.data_train is None and not self._loaded:
            self._loaded = {train: self._read_split(train) for train in (True, False)}
            # The files' own sizes (the official ones for real data) bound the requested split.
            self.official_sizes = tuple(len(self._loaded[t][0]) for t in (True, False))
        super().setup(stage)
        self._loaded = {}  # the base keeps its own (split) copies

    def load_split(self, train: bool) -> tuple[torch.Tensor, Labels]:
        """The official training or test split: uint8 ``(N, 3, 32, 32)`` and int64 labels."""
        if train in self._loaded:
            return self._loaded[train]
        return self._read_split(train)

    def files_present(self) -> bool:
        """Whether the extracted files are already in ``data_dir`` (nothing to download)."""
        return not missing_files(self.hparams.data_dir, self.source)
