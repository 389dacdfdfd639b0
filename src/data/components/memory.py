"""A whole dataset split held as one uint8 tensor, served a batch at a time.

``DataLoader`` calls ``dataset.__getitems__(indices)`` when it exists, so a batch is one tensor
slice instead of ``batch_size`` Python calls and a collate. Samplers (shuffling, Lightning's
``DistributedSampler``) keep working because the loader is a plain ``DataLoader``.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

Labels = torch.Tensor | dict[str, torch.Tensor]


def index_labels(labels: Labels, index: Any) -> Labels:
    """Index a label tensor, or every tensor of a ``{head: labels}`` dict, the same way."""
    if isinstance(labels, Mapping):
        return {head: y[index] for head, y in labels.items()}
    return labels[index]


class InMemoryImages(Dataset):
    """Images ``(N, C, H, W)`` uint8 with labels ``(N,)`` or ``{head: (N,)}``.

    :param images: uint8 tensor of shape ``(N, C, H, W)``.
    :param labels: int64 tensor ``(N,)`` or a dict of such tensors, one per head.
    :param transform: Optional per-sample transform applied in ``__getitem__`` only (the
        per-sample pipeline); batches from ``__getitems__`` stay raw uint8.
    """

    def __init__(self, images: torch.Tensor, labels: Labels, transform: Any = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"InMemoryImages needs uint8 images shaped (N, C, H, W); got {images.dtype} "
                f"{tuple(images.shape)}."
            )
        for y in labels.values() if isinstance(labels, Mapping) else [labels]:
            if len(y) != len(images):
                raise ValueError(f"{len(images)} images but {len(y)} labels.")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Labels]:
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, index_labels(self.labels, i)

    def batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, Labels]:
        """Return ``(images, labels)`` for ``indices`` as one slice each."""
        index = torch.as_tensor(indices, device=self.images.device)
        return self.images[index], index_labels(self.labels, index)

    # DataLoader's batched fetch: only used when there is no per-sample transform.
    def __getitems__(self, indices: Sequence[int]) -> Any:
        if self.transform is not None:
            return [self[i] for i in indices]
        return self.batch(indices)

    def subset(self, index: torch.Tensor) -> "InMemoryImages":
        """A new dataset holding only the rows in ``index`` (copied, contiguous)."""
        return InMemoryImages(
            self.images[index].contiguous(), index_labels(self.labels, index), self.transform
        )

    def to(self, device: torch.device | str) -> "InMemoryImages":
        """Move images and labels to ``device`` in place and return ``self``."""
        self.images = self.images.to(device)
        self.labels = (
            {h: y.to(device) for h, y in self.labels.items()}
            if isinstance(self.labels, Mapping)
            else self.labels.to(device)
        )
        return self

    @property
    def device(self) -> torch.device:
        """Where the images live."""
        return self.images.device


def keep_batch(batch: Any) -> Any:
    """Collate function for batches that ``__getitems__`` already assembled."""
    return batch
