"""Bring your own images: a datamodule over ``train/<class>/*``, ``test/<class>/*``, optional ``val/``.

With the in-memory pipeline (default) every split is decoded once into a uint8 tensor and cached
as a ``.pt`` file (see :mod:`src.data.components.image_folder`); later runs load the tensors and
never decode again. With ``in_memory=false`` images are read lazily per sample by torchvision's
``ImageFolder`` with v2 transforms, for folders too large for memory.

Validation comes from ``val/`` when it exists, otherwise from a seeded split of ``train/``. The
test set is ``test/``, never mixed with training images.
"""

from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from src.data.base_datamodule import STATS_SAMPLE, InMemoryDataModule, channel_stats
from src.data.components.image_folder import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageFolderError,
    cache_split,
    extract_archive,
    image_size_pair,
    list_classes,
    load_split_cached,
    read_image,
    scan_split,
)
from src.data.components.memory import InMemoryImages, Labels


class ImageFolderDataModule(InMemoryDataModule):
    """Class-per-folder images of any size, decoded once, with the base's splits and transforms.

    :param data_dir: Root holding ``train/``, ``test/`` and optionally ``val/``.
    :param archive: Optional ``.tgz``/``.tar`` of that layout, extracted into ``data_dir`` once
        (the archive may wrap the splits in one top folder).
    :param archive_sha256: Optional SHA-256 (hex) the archive must have; checked before
        extraction.
    :param image_size: Resize every image to this size (``32`` or ``[h, w]``); ``None`` keeps the
        size, which must then be the same for every image.
    :param channels: 3 for RGB, 1 for grayscale.
    :param val_size: Without ``val/``: validation images split off ``train/``, as a count or as
        a fraction of ``train/`` (``0.1``).
    :param cache_dir: Folder for the decoded ``.pt`` files (default ``<data_dir>/.decoded``);
        ``cache=false`` turns the cache off.
    :param cache: Keep decoded tensors between runs.
    :param max_image_pixels: Largest image (width x height) decoded; every file's header is
        checked first, so an oversized file fails before it takes any memory. ``None``: no limit.
    :param kwargs: Everything else of :class:`~src.data.base_datamodule.InMemoryDataModule`.
    """

    def __init__(
        self,
        data_dir: str = "data/images",
        archive: str | None = None,
        image_size: int | Sequence[int] | None = None,
        channels: int = 3,
        val_size: int | float = 0.1,
        cache_dir: str | None = None,
        cache: bool = True,
        archive_sha256: str | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        batch_size: int = 128,
        train_val_test_split: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
        if max_image_pixels is not None and max_image_pixels <= 0:
            raise ValueError(
                f"data.max_image_pixels must be a positive pixel count or null (no limit), "
                f"got {max_image_pixels}."
            )
        super().__init__(
            data_dir=data_dir,
            val_size=val_size,
            batch_size=batch_size,
            train_val_test_split=train_val_test_split,
            **kwargs,
        )
        size = image_size_pair(image_size)
        self.input_shape = (channels, *size) if size else (channels, 0, 0)
        self.class_names: list[str] = []
        self._loaded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ---------------------------------------------------------------- folders
    @property
    def root(self) -> Path:
        """The folder holding the split folders."""
        return Path(self.hparams.data_dir)

    @property
    def heads(self) -> dict[str, int]:
        """``{"label": classes}``; before setup counted from ``train/``'s subfolders (no image is
        read), so a model with another class count fails before training. ``0``: not known yet
        (the archive is extracted in :meth:`prepare_data`).

        :raises ImageFolderError: if ``train/`` or ``test/`` is missing or has no class folders.
        """
        if self.class_names:
            return super().heads
        if self.hparams.archive and not (self.root / "train").is_dir():
            return {"label": 0}
        self._ensure_folders()
        return {"label": len(list_classes(self.root / "train"))}

    @property
    def has_val_folder(self) -> bool:
        """Whether ``val/`` provides the validation split."""
        return (self.root / "val").is_dir()

    @property
    def cache_dir(self) -> Path | None:
        """Where decoded splits are cached, or ``None`` when caching is off."""
        if not self.hparams.cache:
            return None
        return Path(self.hparams.cache_dir or self.root / ".decoded")

    def prepare_data(self) -> None:
        """Extract the archive if given, check the layout, and decode + cache every split once."""
        self._ensure_folders()
        if self.hparams.in_memory and self.cache_dir is not None:
            # Without a cache, setup() decodes; decoding here too would do it twice.
            class_to_idx = None
            for split in self._splits():
                classes = cache_split(
                    self.root / split,
                    class_to_idx=class_to_idx,
                    image_size=image_size_pair(self.hparams.image_size),
                    channels=self.hparams.channels,
                    cache_dir=self.cache_dir,
                    max_pixels=self.hparams.max_image_pixels,
                )
                class_to_idx = class_to_idx or {c: i for i, c in enumerate(classes)}

    def _ensure_folders(self) -> None:
        if self.hparams.archive and not (self.root / "train").is_dir():
            extract_archive(self.hparams.archive, self.root, self.hparams.archive_sha256)
        for split in ("train", "test"):
            if not (self.root / split).is_dir():
                hint = (
                    " or set data.archive to a .tgz of that layout"
                    if not self.hparams.archive
                    else ""
                )
                raise ImageFolderError(
                    f"{self.root / split} does not exist: data.data_dir must hold train/<class>/* "
                    f"and test/<class>/* (val/ is optional){hint}."
                )

    def _splits(self) -> list[str]:
        return ["train", "test", *(["val"] if self.has_val_folder else [])]

    def _decode(
        self, split: str, class_to_idx: dict[str, int] | None
    ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        return load_split_cached(
            self.root / split,
            class_to_idx=class_to_idx,
            image_size=image_size_pair(self.hparams.image_size),
            channels=self.hparams.channels,
            cache_dir=self.cache_dir,
            max_pixels=self.hparams.max_image_pixels,
        )

    # ------------------------------------------------------------------ splits
    @property
    def has_val_split(self) -> bool:
        """``val/`` is the validation split when it exists."""
        return self.has_val_folder

    def setup(self, stage: str | None = None) -> None:
        """Load the decoded splits (in memory) or index the files (lazy), then split by seed."""
        if self.data_train is None:
            self._ensure_folders()
            if self.hparams.in_memory:
                self._load_decoded()
            else:
                self._build_lazy()
            self._check_classes()
        super().setup(stage)
        if self.hparams.in_memory and "val" in self._loaded:
            self.data_val = InMemoryImages(*self._loaded["val"])
        self._loaded = {}

    def _check_classes(self) -> None:
        """One class cannot be classified (and its metrics and confusion matrix are undefined)."""
        if len(self.class_names) < 2:
            raise ImageFolderError(
                f"{self.root / 'train'} has one class folder ({self.class_names}); classification "
                f"needs at least two classes: add a folder per class under {self.root / 'train'}/ "
                f"and {self.root / 'test'}/."
            )

    def _load_decoded(self) -> None:
        class_to_idx = None
        for split in self._splits():
            images, labels, classes = self._decode(split, class_to_idx)
            if class_to_idx is None:
                class_to_idx = {c: i for i, c in enumerate(classes)}
                self.class_names = classes
                self.input_shape = tuple(images.shape[1:])
            if split != "train":  # train is shuffled by the base's seeded split
                order = self._seeded_order(len(labels))
                images, labels = images[order], labels[order]
            self._loaded[split] = (images, labels)
        self.official_sizes = (len(self._loaded["train"][0]), len(self._loaded["test"][0]))

    def _seeded_order(self, n: int) -> torch.Tensor:
        """A seeded permutation for ``val/`` and ``test/``: folders list images class by class,
        and partial evaluations (``limit_test_batches``) should still see every class."""
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.split_seed))

    def load_split(self, train: bool) -> tuple[torch.Tensor, Labels]:
        """Decoded ``train/`` or ``test/`` as uint8 ``(N, C, H, W)`` and int64 labels."""
        split = "train" if train else "test"
        if split not in self._loaded:
            self._load_decoded()
        return self._loaded[split]

    # ------------------------------------------------------------ lazy pipeline
    def _sample_transform(self, train: bool) -> v2.Compose:
        """Resize (if configured) then the same augmentation/normalization as the batch path."""
        ops = []
        if self.hparams.image_size is not None:
            ops.append(v2.Resize(list(image_size_pair(self.hparams.image_size)), antialias=True))
        ops.append(self.transform.per_sample(train))
        return v2.Compose(ops)

    def _folder(self, split: str, train: bool) -> ImageFolder:
        loader = partial(
            read_image,
            channels=self.hparams.channels,
            max_pixels=self.hparams.max_image_pixels,
        )
        return ImageFolder(
            str(self.root / split), transform=self._sample_transform(train), loader=loader
        )

    def _sample_images(self, samples: list[tuple[str, int]]) -> Iterator[torch.Tensor]:
        """A seeded sample of training images (resized if configured), for the statistics."""
        generator = torch.Generator().manual_seed(self.hparams.split_seed)
        size = image_size_pair(self.hparams.image_size)
        for i in torch.randperm(len(samples), generator=generator)[:STATS_SAMPLE].tolist():
            image = read_image(samples[i][0], self.hparams.channels, self.hparams.max_image_pixels)
            yield TF.resize(image, list(size), antialias=True) if size else image

    def _build_lazy(self) -> None:
        """torchvision ``ImageFolder`` datasets reading files per sample in the workers."""
        classes, _samples = scan_split(self.root / "train")
        class_to_idx = {c: i for i, c in enumerate(classes)}
        for split in self._splits()[1:]:
            scan_split(self.root / split, class_to_idx)  # same classes, not empty
        self.class_names = classes
        if self.stats_pending:
            self.set_normalization(*channel_stats(self._sample_images(_samples)))
        train_aug, train_plain = self._folder("train", True), self._folder("train", False)
        self.official_sizes = (len(train_aug), len(self._folder("test", False)))
        n_train, n_val, n_test = self.split_sizes()
        generator = torch.Generator().manual_seed(self.hparams.split_seed)
        order = torch.randperm(len(train_aug), generator=generator).tolist()
        self.data_train = Subset(train_aug, order[:n_train])
        if self.has_val_folder:
            val = self._folder("val", False)
            self.data_val = Subset(val, self._seeded_order(len(val)).tolist())
        else:
            self.data_val = Subset(train_plain, order[n_train : n_train + n_val])
        test = self._folder("test", False)
        self.data_test = Subset(test, self._seeded_order(len(test))[:n_test].tolist())
        if self.hparams.image_size is None:
            self.input_shape = tuple(self.data_test[0][0].shape)
        else:
            self.input_shape = (self.hparams.channels, *image_size_pair(self.hparams.image_size))


if __name__ == "__main__":
    _ = ImageFolderDataModule()
