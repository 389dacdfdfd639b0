"""The datamodule base every built-in dataset specialises.

A subclass says where its files come from (:meth:`prepare_data`) and how to read a split into
memory (:meth:`load_split`: uint8 images ``(N, C, H, W)`` plus labels). The base does the rest:
the seeded train/validation split (the official test set stays the test set), batch size per
device, and the two input pipelines:

- ``in_memory=true`` (default): batches are tensor slices; normalization and augmentation run
  batch-wise on the training device in :meth:`on_after_batch_transfer`. With
  ``data_on_device=true`` the whole dataset is moved to the GPU once.
- ``in_memory=false``: classic per-sample torchvision v2 transforms in DataLoader workers, for
  datasets that do not fit in memory (subclasses may override :meth:`per_sample_dataset`).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from src.data.components.memory import InMemoryImages, Labels, index_labels, keep_batch
from src.data.components.transforms import BatchTransform
from src.utils.plain_data import make_plain


class InMemoryDataModule(LightningDataModule):
    """Base class: splits, loaders and batch-wise transforms for image classification.

    :param data_dir: Folder holding (or receiving) the dataset files.
    :param train_val_test_split: Sizes ``(train, val, test)``. Train and val are a seeded split
        of the official training set; test is (a seeded subset of) the official test set.
        ``None`` uses the whole test set and ``val_size`` validation images.
    :param val_size: Validation images when ``train_val_test_split`` is ``None``.
    :param batch_size: Global batch size, divided across devices.
    :param num_workers: DataLoader workers (the in-memory pipeline needs none).
    :param pin_memory: Pin host memory for faster copies to the GPU.
    :param split_seed: Seed of the train/validation split (independent of the training seed).
    :param normalize: ``{mean: [...], std: [...]}`` of the [0, 1]-scaled images.
    :param augment: Training augmentation, keyword arguments of :class:`BatchTransform`
        (``crop_padding``, ``hflip``, ``degrees``, ``translate``, ``scale``).
    :param in_memory: Use the in-memory batch-wise pipeline (``False``: per-sample transforms).
    :param data_on_device: With the in-memory pipeline, keep the dataset on the GPU.
    :param download: Allow fetching the dataset over the network.
    """

    #: Subclasses set these: names of the classes of the primary head and image shape.
    class_names: Sequence[str] = ()
    input_shape: tuple[int, int, int] = (1, 28, 28)
    #: Official split sizes (train, test), used to check ``train_val_test_split``.
    official_sizes: tuple[int, int] = (0, 0)

    def __init__(
        self,
        data_dir: str = "data/",
        train_val_test_split: Sequence[int] | None = None,
        val_size: int = 5_000,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        split_seed: int = 42,
        normalize: Mapping[str, Sequence[float]] | None = None,
        augment: Mapping[str, Any] | None = None,
        in_memory: bool = True,
        data_on_device: bool = True,
        download: bool = True,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        make_plain(self.hparams)
        normalize = dict(normalize or self.default_normalize())
        self.transform = BatchTransform(**normalize, **dict(augment or {}))
        self.batch_size_per_device = batch_size
        self.data_train: Dataset | None = None
        self.data_val: Dataset | None = None
        self.data_test: Dataset | None = None

    # ------------------------------------------------------------ subclass API
    def default_normalize(self) -> dict[str, list[float]]:
        """Per-channel statistics used when the config gives none."""
        channels = self.input_shape[0]
        return {"mean": [0.5] * channels, "std": [0.5] * channels}

    def load_split(self, train: bool) -> tuple[torch.Tensor, Labels]:
        """Read the official training (``train=True``) or test split into memory."""
        raise NotImplementedError

    @property
    def heads(self) -> dict[str, int]:
        """``{head: num_classes}`` of the labels this datamodule yields."""
        return {"label": len(self.class_names)}

    @property
    def num_classes(self) -> int:
        """Number of classes of the primary head (the original template's property)."""
        return next(iter(self.heads.values()))

    # --------------------------------------------------------------- splitting
    def split_sizes(self) -> tuple[int, int, int]:
        """``(train, val, test)`` sizes, checked against the official split sizes."""
        n_train, n_test = self.official_sizes
        split = self.hparams.train_val_test_split
        if split is None:
            split = (n_train - self.hparams.val_size, self.hparams.val_size, n_test)
        if len(split) != 3 or any(int(s) < 0 for s in split):
            raise ValueError(
                f"train_val_test_split must be three sizes (train, val, test); got {split}."
            )
        train, val, test = (int(s) for s in split)
        if train + val > n_train or test > n_test:
            raise ValueError(
                f"train_val_test_split={list(split)} asks for more than the dataset has: train + val "
                f"must be at most {n_train} (official training set) and test at most {n_test} "
                f"(official test set, never mixed with training images)."
            )
        return train, val, test

    def setup(self, stage: str | None = None) -> None:
        """Load the splits once; divide the batch size across devices."""
        if self.trainer is not None:
            world = self.trainer.world_size
            if self.hparams.batch_size % world != 0:
                raise RuntimeError(
                    f"Batch size ({self.hparams.batch_size}) is not divisible by the number of "
                    f"devices ({world})."
                )
            self.batch_size_per_device = self.hparams.batch_size // world
        if self.data_train is not None:
            return
        n_train, n_val, n_test = self.split_sizes()
        generator = torch.Generator().manual_seed(self.hparams.split_seed)
        full_train = InMemoryImages(*self.load_split(train=True))
        order = torch.randperm(len(full_train), generator=generator)
        train_set = full_train.subset(order[:n_train])
        val_set = full_train.subset(order[n_train : n_train + n_val])
        test_set = InMemoryImages(*self.load_split(train=False))
        if n_test < len(test_set):
            test_set = test_set.subset(torch.randperm(len(test_set), generator=generator)[:n_test])
        self.data_train, self.data_val, self.data_test = train_set, val_set, test_set
        if not self.hparams.in_memory:
            self.data_train = self.per_sample_dataset(train_set, train=True)
            self.data_val = self.per_sample_dataset(val_set, train=False)
            self.data_test = self.per_sample_dataset(test_set, train=False)

    def per_sample_dataset(self, data: InMemoryImages, train: bool) -> Dataset:
        """Dataset for the per-sample pipeline; by default the same images with v2 transforms."""
        return InMemoryImages(data.images, data.labels, transform=self.transform.per_sample(train))

    # ------------------------------------------------------------- dataloaders
    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("Call setup() before asking for a dataloader.")
        fast = isinstance(dataset, InMemoryImages) and dataset.transform is None
        if fast and self.hparams.data_on_device and self.trainer is not None:
            device = self.trainer.strategy.root_device
            if device.type != "cpu" and dataset.device != device:
                dataset.to(device)
        on_device = fast and dataset.device.type != "cpu"
        workers = 0 if fast else self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size_per_device,
            shuffle=train,
            drop_last=False,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory and not on_device,
            collate_fn=keep_batch if fast else None,
            persistent_workers=self.hparams.persistent_workers and workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._loader(self.data_train, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in order, never augmented."""
        return self._loader(self.data_val, train=False)

    def test_dataloader(self) -> DataLoader:
        """Official test set batches, in order, never augmented."""
        return self._loader(self.data_test, train=False)

    def predict_dataloader(self) -> DataLoader:
        """Same as the test set."""
        return self.test_dataloader()

    # ------------------------------------------------------- batch transforms
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalize uint8 batches on the device; augment only while training."""
        x, y = batch
        if x.dtype == torch.uint8:
            training = self.trainer is not None and self.trainer.training
            x = self.transform(x, train=training)
        return x, y

    def state_dict(self) -> dict[str, Any]:
        """Nothing to save: splits are rebuilt from ``split_seed``."""
        return {}


__all__ = ["InMemoryDataModule", "index_labels"]
