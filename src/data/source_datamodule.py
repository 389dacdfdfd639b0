"""The datamodule behind ``data=torchvision``, ``data=hf`` and ``data=arrays``.

A subclass opens a :class:`~src.data.components.sources.Source`; this class does the rest:

- in memory (default): every split is decoded once into uint8 tensors and cached as one ``.pt``
  file under ``cache_dir`` together with the class names and the normalization statistics of
  the training split; later runs load that file and decode nothing. The cache key is the
  source's fingerprint plus the reading settings (channels, size), so a changed dataset or
  setting decodes again. Decoding holds a file lock: DDP ranks and parallel runs decode once.
- ``in_memory=false``: samples are read and converted one at a time in DataLoader workers
  (datasets larger than memory); statistics come from a seeded sample of training images.

The source's own test split is the test split; its validation split is used when it has one,
otherwise ``val_size`` images are split off the training split by ``split_seed``.
"""

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch.utils.data import Dataset

from src.data.base_datamodule import STATS_SAMPLE, InMemoryDataModule, channel_stats
from src.data.components.image_folder import image_size_pair
from src.data.components.memory import InMemoryImages, Labels
from src.data.components.sources import ImageConverter, Source, check_labels
from src.utils.checkpoints import atomic_torch_save

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the cached content changes meaning


class SourceSamples(Dataset):
    """Per-sample view of a source split: read, convert, transform (the lazy pipeline)."""

    def __init__(
        self, data: Dataset, indices: Sequence[int], convert: ImageConverter, transform: Any
    ) -> None:
        self.data, self.indices = data, list(indices)
        self.convert, self.transform = convert, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.data[self.indices[i]]
        return self.transform(self.convert(image)), int(label)


class SourceDataModule(InMemoryDataModule):
    """Any :class:`Source` on the in-memory pipeline (or the per-sample one).

    :param data_dir: Folder of the dataset files (and of the decode cache by default).
    :param image_size: Resize every image to this size (``32`` or ``[h, w]``); ``None`` keeps
        it, which must then be the same for every image.
    :param channels: 1 (grayscale) or 3 (RGB); ``None`` keeps the source's.
    :param val_size: Without a validation split in the source: images split off the training
        split, a count or a fraction (``0.1``).
    :param cache: Keep decoded tensors between runs.
    :param cache_dir: Folder of the decoded ``.pt`` files (default ``<data_dir>/.decoded``).
    :param kwargs: Everything else of :class:`~src.data.base_datamodule.InMemoryDataModule`.
    """

    def __init__(
        self,
        data_dir: str = "data/",
        image_size: int | Sequence[int] | None = None,
        channels: int | None = None,
        val_size: int | float = 0.1,
        cache: bool = True,
        cache_dir: str | None = None,
        batch_size: int = 128,
        train_val_test_split: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        self.convert = ImageConverter(channels, image_size_pair(image_size))
        self._source: Source | None = None
        self._decoded: dict[str, Any] | None = None
        self._shape: tuple[int, int, int] | None = None
        self.input_shape = (channels or 3, 0, 0)  # channels for the placeholder statistics
        super().__init__(
            data_dir=data_dir,
            val_size=val_size,
            batch_size=batch_size,
            train_val_test_split=train_val_test_split,
            **kwargs,
        )
        self._ready = True  # from here on, asking for the shape may open the source

    # ------------------------------------------------------------ subclass API
    def open_source(self) -> Source:
        """Open the dataset (downloading it first if allowed and needed)."""
        raise NotImplementedError

    # ------------------------------------------------------------ description
    @property
    def source(self) -> Source:
        """The opened source (opened once, on first use)."""
        if self._source is None:
            self._source = self.open_source()
        return self._source

    @property
    def class_names(self) -> list[str]:  # type: ignore[override]
        """Class names in label order, from the source (or its decode cache)."""
        if self._decoded is not None:
            return list(self._decoded["class_names"])
        return list(self.source.class_names())

    @property
    def has_val_split(self) -> bool:
        """Whether the source has its own validation split."""
        return "val" in self.source.split_names()

    @property
    def input_shape(self) -> tuple[int, int, int]:  # type: ignore[override]
        """``(C, H, W)`` after conversion: from the settings when both are given, otherwise
        from the decoded data (in memory) or from the first training image."""
        if self._shape is None and self.convert.channels and self.convert.size:
            self._shape = (self.convert.channels, *self.convert.size)
        if self._shape is None and self._source_ready():
            if self.hparams.in_memory:
                self._shape = tuple(self.decoded()["splits"]["train"][0].shape[1:])
            else:
                self._shape = tuple(self.convert(self.source.split("train")[0][0]).shape)
        return self._shape or self._placeholder_shape

    @input_shape.setter
    def input_shape(self, shape: tuple[int, int, int]) -> None:
        self._placeholder_shape = tuple(shape)

    def _source_ready(self) -> bool:
        """Whether the source may be opened (not while the base constructor runs)."""
        return getattr(self, "_ready", False)

    # ------------------------------------------------------------ decoding
    @property
    def cache_file(self) -> Path | None:
        """``<cache_dir>/<source>-<key>.pt``, or ``None`` with ``cache=false``."""
        if not self.hparams.cache:
            return None
        folder = Path(self.hparams.cache_dir or Path(self.hparams.data_dir) / ".decoded")
        return folder / f"{self.source.name}-{self.cache_key()[:20]}.pt"

    def cache_key(self) -> str:
        """Fingerprint of the source plus the settings that change the decoded tensors."""
        settings = f"{CACHE_FORMAT}|{self.convert.channels}|{self.convert.size}"
        return hashlib.sha1(f"{settings}|{self.source.fingerprint()}".encode()).hexdigest()

    def decoded(self) -> dict[str, Any]:
        """``{splits: {split: (images, labels)}, class_names, stats}``, from the cache when it is
        current, else decoded now (under a file lock, so concurrent runs decode once)."""
        if self._decoded is not None:
            return self._decoded
        cache_file = self.cache_file
        if cache_file is None:
            self._decoded = self._decode()
            return self._decoded
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache_file.with_suffix(".lock"))):
            key = self.cache_key()
            if cache_file.is_file():
                cached = torch.load(cache_file, weights_only=True, mmap=True)
                if cached.get("key") == key:
                    log.info(f"Loaded decoded {self.source.name} from {cache_file}")
                    self._decoded = cached
                    return cached
            self._decoded = self._decode()
            for stale in cache_file.parent.glob(f"{self.source.name}-*.pt"):
                stale.unlink(missing_ok=True)  # an older decoding of the same source
            atomic_torch_save({"key": key, **self._decoded}, cache_file)
            log.info(f"Cached the decoded images in {cache_file}")
        return self._decoded

    def _decode(self) -> dict[str, Any]:
        source = self.source
        classes = [str(c) for c in source.class_names()]
        log.info(f"Decoding {source.name} (once; cached afterwards)...")
        splits = {}
        for split in source.split_names():
            images, labels = source.read_split(split, self.convert)
            check_labels(labels, classes, f"{source.name} {split} split")
            splits[split] = (images, labels)
        mean, std = channel_stats(splits["train"][0])
        return {"splits": splits, "class_names": classes, "stats": {"mean": mean, "std": std}}

    def training_stats(self, images: torch.Tensor) -> tuple[list[float], list[float]]:
        """The training split's statistics, kept with the decoded data."""
        stats = self.decoded()["stats"]
        return stats["mean"], stats["std"]

    # ------------------------------------------------------------ lifecycle
    def prepare_data(self) -> None:
        """Open the source (downloading if allowed) and decode + cache it once."""
        if self.hparams.in_memory:
            self.decoded()
        else:
            self.source.split_names()

    def load_split(self, train: bool) -> tuple[torch.Tensor, Labels]:
        """The source's training or test split, decoded."""
        images, labels = self.decoded()["splits"]["train" if train else "test"]
        return images, labels

    def setup(self, stage: str | None = None) -> None:
        """Decoded tensors (in memory) or per-sample views (lazy), split by seed."""
        if self.data_train is None:
            if self.hparams.in_memory:
                splits = self.decoded()["splits"]
                self.official_sizes = (len(splits["train"][1]), len(splits["test"][1]))
            else:
                self._build_lazy()
        super().setup(stage)
        if (
            self.hparams.in_memory
            and self.has_val_split
            and self.hparams.train_val_test_split is None
        ):
            self.data_val = InMemoryImages(*self.decoded()["splits"]["val"])

    def _build_lazy(self) -> None:
        source = self.source
        train, test = source.split("train"), source.split("test")
        self.official_sizes = (len(train), len(test))
        if self.stats_pending:
            self.set_normalization(*self._lazy_stats(train))
        n_train, n_val, n_test = self.split_sizes()
        generator = torch.Generator().manual_seed(self.hparams.split_seed)
        order = torch.randperm(len(train), generator=generator).tolist()
        per_sample = self.transform.per_sample
        self.data_train = SourceSamples(train, order[:n_train], self.convert, per_sample(True))
        if self.has_val_split and self.hparams.train_val_test_split is None:
            val = source.split("val")
            self.data_val = SourceSamples(val, range(len(val)), self.convert, per_sample(False))
        else:
            val_indices = order[n_train : n_train + n_val]
            self.data_val = SourceSamples(train, val_indices, self.convert, per_sample(False))
        test_order = torch.randperm(len(test), generator=generator)[:n_test].tolist()
        if n_test >= len(test):
            test_order = list(range(len(test)))
        self.data_test = SourceSamples(test, test_order, self.convert, per_sample(False))

    def _lazy_stats(self, train: Dataset) -> tuple[list[float], list[float]]:
        """Statistics of a seeded sample of training images, cached next to the decode cache."""
        stats_file = self.cache_file.with_suffix(".stats.json") if self.cache_file else None
        if stats_file is not None and stats_file.is_file():
            stats = json.loads(stats_file.read_text())
            if stats.get("key") == self.cache_key():
                return stats["mean"], stats["std"]
        generator = torch.Generator().manual_seed(self.hparams.split_seed)
        sample = torch.randperm(len(train), generator=generator)[:STATS_SAMPLE].tolist()
        mean, std = channel_stats(self.convert(train[i][0]) for i in sample)
        if stats_file is not None:
            stats_file.parent.mkdir(parents=True, exist_ok=True)
            stats_file.write_text(json.dumps({"key": self.cache_key(), "mean": mean, "std": std}))
        return mean, std

    def per_sample_dataset(self, data: InMemoryImages, train: bool) -> Dataset:
        """Not used: the lazy pipeline builds its own views in :meth:`setup`."""
        return data
