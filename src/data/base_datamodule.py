"""The datamodule base every built-in dataset specialises.

A subclass says where its files come from (:meth:`prepare_data`) and how to read a split into
memory (:meth:`load_split`: uint8 images ``(N, C, H, W)`` plus labels). The base does the rest:
the seeded train/validation split (the official test set stays the test set), batch size per
device, and the two input pipelines:

- ``in_memory=true`` (default): batches are tensor slices; normalization and augmentation run
  batch-wise on the training device in :meth:`on_after_batch_transfer`. With
  ``data_on_device=true`` the whole dataset is moved to the GPU once.
  Loaders iterated by hand, outside a Trainer, yield the same normalized float batches
  (:class:`NormalizedBatches`), as in the original template.
- ``in_memory=false``: classic per-sample torchvision v2 transforms in DataLoader workers, for
  datasets that do not fit in memory (subclasses may override :meth:`per_sample_dataset`).

Exact resume: the training order comes from ``(seed, epoch)`` (:class:`EpochSampler`) and the
training loader is stateful (:class:`ResumableDataLoader`), so a run resumed from a mid-epoch
checkpoint skips the batches it already trained on. The datamodule's checkpoint state holds
the global RNG states, which Lightning does not save. Every loader draws its worker base seed
from its own generator, so iterating a loader never moves the global RNG.
"""

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from src.data.components.augment_spec import AugmentSpec
from src.data.components.memory import InMemoryImages, Labels, index_labels, keep_batch
from src.data.components.transforms import BatchTransform
from src.utils.checkpoints import collect_rng_state, restore_rng_state
from src.utils.data_description import DataDescription, fill_names
from src.utils.plain_data import make_plain

#: Images read to compute normalization statistics when they are not all in memory.
STATS_SAMPLE = 10_000


class EpochSampler(DistributedSampler):
    """This rank's share of a shuffled order that depends only on ``(seed, epoch)``.

    A ``DistributedSampler`` (Lightning leaves it in place under DDP) that can skip the first
    ``skip`` samples of its next iteration, for a run resumed in the middle of an epoch.
    """

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def __iter__(self) -> Any:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0  # only the resumed epoch is shortened
        return iter(indices[skip:])


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over an :class:`EpochSampler` whose position Lightning checkpoints.

    Lightning saves the ``state_dict`` of stateful training loaders in its fit loop and loads it
    before iterating again. The position is the number of batches the model has trained on in
    the current epoch, read from the trainer through ``position`` (the loader itself may have
    prefetched more).

    :param position: Returns ``(batches trained this epoch, batches per epoch)``.
    """

    def __init__(
        self, *args: Any, position: Callable[[], tuple[int, int]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.position = position

    def __iter__(self) -> Any:
        if isinstance(self.sampler, EpochSampler) and self.generator is not None:
            # Worker seeds follow (seed, epoch) too, whether or not the run was resumed.
            self.generator.manual_seed(self.sampler.seed * 100_003 + self.sampler.epoch)
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        """``{seed, epoch, samples}``: where the next training batch starts."""
        if not isinstance(self.sampler, EpochSampler) or self.position is None:
            return {}
        batches, per_epoch = self.position()
        epoch = self.sampler.epoch
        if batches >= per_epoch:  # the epoch is over: the next one starts from its beginning
            epoch, batches = epoch + 1, 0
        return {"seed": self.sampler.seed, "epoch": epoch, "samples": batches * self.batch_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the order of ``state_dict`` on the next iteration."""
        if not state_dict or not isinstance(self.sampler, EpochSampler):
            return
        self.sampler.seed = state_dict["seed"]
        self.sampler.set_epoch(state_dict["epoch"])
        self.sampler.skip = state_dict["samples"]


class NormalizedBatches:
    """Collate for loaders used outside a Trainer: uint8 slices become normalized float batches,
    training ones augmented. Augmentation draws from its own seeded stream, so iterating such a
    loader leaves the global RNG (and thus a later run) untouched."""

    def __init__(self, transform: Callable[..., torch.Tensor], train: bool, seed: int = 0) -> None:
        self.transform = transform
        self.train = train
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: Any) -> tuple[torch.Tensor, Any]:
        x, y = keep_batch(batch)
        if not self.train:
            return self.transform(x, train=False), y
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(x, train=True), y


class InMemoryDataModule(LightningDataModule):
    """Base class: splits, loaders and batch-wise transforms for image classification.

    :param data_dir: Folder holding (or receiving) the dataset files.
    :param train_val_test_split: Sizes ``(train, val, test)``. Train and val are a seeded split
        of the official training set; test is (a seeded subset of) the official test set.
        ``None`` uses the whole test set and ``val_size`` validation images.
    :param val_size: Validation images when ``train_val_test_split`` is ``None``: a count, or a
        fraction of the training split (``0.1``).
    :param batch_size: Global batch size, divided across devices.
    :param num_workers: DataLoader workers (the in-memory pipeline needs none).
    :param pin_memory: Pin host memory for faster copies to the GPU.
    :param split_seed: Seed of the train/validation split (independent of the training seed).
    :param normalize: ``{mean: [...], std: [...]}`` of the [0, 1]-scaled images; ``None``: the
        dataset's published statistics where the class has them, otherwise computed from the
        training split when it is loaded.
    :param augment: Training augmentation, the fields of :class:`AugmentSpec`
        (``crop_padding``, ``hflip``, ``degrees``, ``translate``, ``scale``, ``policy``,
        ``policy_kwargs``, ``random_erasing``).
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
        val_size: int | float = 5_000,
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
        stats = dict(normalize or self.default_normalize() or {})
        #: Whether mean and std still have to be computed from the training split.
        self.stats_pending = not stats
        channels = self.input_shape[0]
        stats = stats or {"mean": [0.0] * channels, "std": [1.0] * channels}
        self.transform = BatchTransform(**stats, spec=AugmentSpec.from_config(augment))
        #: The statistics as given or computed (plain floats; the transform holds float32).
        self.stats = {k: [float(v) for v in stats[k]] for k in ("mean", "std")}
        self.batch_size_per_device = batch_size
        self.data_train: Dataset | None = None
        self.data_val: Dataset | None = None
        self.data_test: Dataset | None = None

    # ------------------------------------------------------------ subclass API
    def default_normalize(self) -> dict[str, list[float]] | None:
        """Published per-channel statistics used when the config gives none; ``None`` (here):
        computed from the training split instead."""
        return None

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalize with these per-channel statistics from now on."""
        channels = len(mean)
        self.transform.mean = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
        self.transform.std = torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1)
        self.stats = {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
        self.stats_pending = False

    def training_stats(self, images: torch.Tensor) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of uint8 training images, scaled to [0, 1]. Subclasses
        with a decode cache keep the result there."""
        return channel_stats(images)

    def describe(self) -> DataDescription:
        """Input shape, class names per head and normalization, read by the model builder, the
        early checks and the checkpoint metadata."""
        known = dict(getattr(self, "label_names", None) or {})
        stats = {} if self.stats_pending else {k: tuple(v) for k, v in self.stats.items()}
        return DataDescription(
            input_shape=tuple(int(s) for s in self.input_shape),
            class_names=fill_names(self.heads, known, self.class_names),
            **stats,
        )

    def load_split(self, train: bool) -> tuple[torch.Tensor, Labels]:
        """Read the official training (``train=True``) or test split into memory."""
        raise NotImplementedError

    @property
    def heads(self) -> dict[str, int]:
        """``{head: num_classes}`` of the labels this datamodule yields."""
        return {"label": len(self.class_names)}

    @property
    def has_val_split(self) -> bool:
        """Whether the source has its own validation split (then none is split off train)."""
        return False

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
            val = 0 if self.has_val_split else self.hparams.val_size
            n_val = int(round(val * n_train)) if 0 < val < 1 else int(val)
            if not 0 <= n_val < n_train:
                raise ValueError(
                    f"data.val_size={val} leaves no training images out of {n_train}; use a "
                    f"smaller count or a fraction such as 0.1."
                )
            split = (n_train - n_val, n_val, n_test)
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
        if self.stats_pending:
            self.set_normalization(*self.training_stats(full_train.images))
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
        kwargs: dict[str, Any] = {}
        loader_cls = DataLoader
        if train:
            loader_cls = ResumableDataLoader
            kwargs["sampler"] = self._train_sampler(dataset)
            kwargs["position"] = self._train_position if self.trainer is not None else None
        # A last training batch of one image cannot train BatchNorm layers: drop that one image.
        drop_last = train and self._rank_share(len(dataset)) % self.batch_size_per_device == 1
        return loader_cls(
            dataset,
            batch_size=self.batch_size_per_device,
            drop_last=drop_last,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory and not on_device,
            collate_fn=self._collate(train) if fast else None,
            persistent_workers=self.hparams.persistent_workers and workers > 0,
            # Its own generator: iterating a loader must not consume the global RNG.
            generator=torch.Generator().manual_seed(0),
            **kwargs,
        )

    def _rank_share(self, n: int) -> int:
        """Samples one rank gets of ``n`` (the distributed sampler pads to equal shares)."""
        world = self.trainer.world_size if self.trainer is not None else 1
        return -(-n // world)

    def _collate(self, train: bool) -> Callable[[Any], Any]:
        """Inside a Trainer, batches stay uint8 (normalized later, on the device); a loader
        iterated by hand yields the float batches the model sees, as the original template's do."""
        if self.trainer is not None:
            return keep_batch
        return NormalizedBatches(self.transform, train=train)

    def _train_sampler(self, dataset: Dataset) -> EpochSampler:
        """The (seed, epoch)-ordered sampler of this rank; the seed is the run's seed."""
        seed = os.environ.get("PL_GLOBAL_SEED")  # set by seed_everything
        seed = int(seed) if seed is not None else int.from_bytes(os.urandom(4), "little")
        world, rank = 1, 0
        if self.trainer is not None:
            world, rank = self.trainer.world_size, self.trainer.global_rank
            seed = self.trainer.strategy.broadcast(seed, src=0)  # one order for all ranks
        return EpochSampler(dataset, seed=seed, num_replicas=world, rank=rank)

    def _train_position(self) -> tuple[int, int]:
        """``(batches trained in the current epoch, batches per epoch)`` from the trainer."""
        trainer = self.trainer
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return done, trainer.num_training_batches

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches in (seed, epoch) order; resumable mid-epoch."""
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
        """The global RNG states (splits are rebuilt from ``split_seed``, not saved)."""
        return {"rng": collect_rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the global RNG states, so augmentation and dropout continue exactly."""
        if "rng" in state_dict:
            restore_rng_state(state_dict["rng"])


def channel_stats(images: torch.Tensor | Iterable[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images in [0, 1].

    :param images: One ``(N, C, H, W)`` tensor, or any iterable of ``(C, H, W)`` images or
        ``(N, C, H, W)`` chunks (sizes may differ). Accumulated in float64 chunks, so no float copy
        of the whole dataset is made.
    """
    if isinstance(images, torch.Tensor):
        images = images.split(4096)
    total = squares = None
    count = 0
    for x in images:
        x = x.to(torch.float64).div_(255.0)
        x = x.reshape(-1, *x.shape[-3:]) if x.ndim == 4 else x.unsqueeze(0)
        sums, sq = x.sum(dim=(0, 2, 3)), x.square().sum(dim=(0, 2, 3))
        total, squares = (sums, sq) if total is None else (total + sums, squares + sq)
        count += x.numel() // x.shape[1]
    if total is None or count == 0:
        raise ValueError("Cannot compute normalization statistics of an empty training split.")
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt().clamp_min(1e-3)
    return [round(float(m), 4) for m in mean], [round(float(v), 4) for v in std]


__all__ = [
    "channel_stats",
    "EpochSampler",
    "InMemoryDataModule",
    "NormalizedBatches",
    "ResumableDataLoader",
    "index_labels",
]
