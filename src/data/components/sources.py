"""Where images come from, read the same way whatever the format.

A :class:`Source` (torchvision dataset classes, Hugging Face datasets, numpy arrays) names its
splits, its class names and a fingerprint of its content, and reads one sample at a time.
:class:`ImageConverter` turns whatever a source yields (a PIL image, an ``HWC``/``CHW`` numpy
array or tensor, uint8 or float in [0, 1]) into the uint8 ``(C, H, W)`` tensor the pipelines
use, with the configured channels and size. :mod:`src.data.source_datamodule` builds the
datamodule on top.
"""

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A data source is missing, unreadable or inconsistent."""


class ImageConverter:
    """Any image a source yields -> uint8 ``(C, H, W)`` with ``channels`` and ``size``.

    :param channels: 1 (grayscale) or 3 (RGB); ``None`` keeps the image's own (alpha dropped).
    :param size: ``(h, w)`` to resize to; ``None`` keeps the size.
    """

    def __init__(self, channels: int | None = None, size: tuple[int, int] | None = None) -> None:
        if channels not in (None, 1, 3):
            raise ValueError(f"data.channels must be 1, 3 or null, got {channels}.")
        self.channels = channels
        self.size = size

    def __call__(self, image: Any) -> torch.Tensor:
        return self.batch(self.to_tensor(image).unsqueeze(0))[0]

    def batch(self, images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """The same conversion for a uint8 batch ``(N, C, H, W)``, chunk by chunk."""
        parts = []
        for x in images.split(chunk):
            x = x[:, :3]  # drops an alpha channel
            if self.channels == 1 and x.shape[1] == 3:
                x = TF.rgb_to_grayscale(x)
            elif self.channels == 3 and x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            if self.size is not None and tuple(x.shape[-2:]) != self.size:
                x = TF.resize(x, list(self.size), antialias=True)
            parts.append(x.contiguous())
        return torch.cat(parts) if len(parts) != 1 else parts[0]

    @staticmethod
    def to_tensor(image: Any) -> torch.Tensor:
        """uint8 ``(C, H, W)`` from a PIL image, or an array/tensor ``HW``, ``HWC`` or ``CHW``."""
        if isinstance(image, Image.Image):
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB" if image.mode not in ("1", "I", "I;16", "F") else "L")
            return TF.pil_to_tensor(image)
        x = torch.as_tensor(np.asarray(image))
        if x.ndim == 2:
            x = x.unsqueeze(0)
        elif x.ndim == 3 and x.shape[-1] in (1, 3, 4) and x.shape[0] not in (1, 3, 4):
            x = x.permute(2, 0, 1)  # HWC -> CHW
        if x.ndim != 3:
            raise SourceError(f"An image has shape {tuple(x.shape)}; expected HW, HWC or CHW.")
        return to_uint8(x)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 as is; floats in [0, 1] scaled to 0-255; other integers must lie in 0-255."""
    if x.dtype == torch.uint8:
        return x
    if x.is_floating_point():
        lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 1.0)
        if lo < 0 or hi > 1:
            raise SourceError(
                f"Float images must lie in [0, 1]; found values in [{lo:.3g}, {hi:.3g}]. "
                "Scale them (or store uint8 0-255)."
            )
        return x.mul(255).round_().to(torch.uint8)
    lo, hi = (int(x.min()), int(x.max())) if x.numel() else (0, 0)
    if lo < 0 or hi > 255:
        raise SourceError(f"Integer images must lie in 0-255; found values in [{lo}, {hi}].")
    return x.to(torch.uint8)


class Source:
    """A dataset's splits, class names and fingerprint; subclasses read the format.

    :attr name: Short name used for cache files (no path separators).
    """

    name: str = "source"

    def split_names(self) -> list[str]:
        """Splits the source has: ``train`` and ``test``, and ``val`` when it has its own."""
        raise NotImplementedError

    def split(self, name: str) -> Dataset:
        """Map-style dataset of ``(image, label)`` for one split (images in any form
        :class:`ImageConverter` reads)."""
        raise NotImplementedError

    def class_names(self) -> list[str]:
        """Names of the classes, in label order."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Identifies the content (and reading settings) cheaply, for the decode cache."""
        raise NotImplementedError

    def read_split(self, name: str, convert: ImageConverter) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as uint8 ``(N, C, H, W)`` and int64 ``(N,)``; one sample at a time
        here, vectorized where a format allows it."""
        data = self.split(name)
        return stack_samples((data[i] for i in range(len(data))), len(data), convert, name)


def stack_samples(
    samples: Any, n: int, convert: ImageConverter, split: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert ``n`` ``(image, label)`` pairs into one uint8 tensor and one label tensor."""
    images: torch.Tensor | None = None
    labels = torch.empty(n, dtype=torch.int64)
    start = last = time.monotonic()
    for i, (image, label) in enumerate(samples):
        x = convert(image)
        if images is None:
            images = torch.empty((n, *x.shape), dtype=torch.uint8)
        if x.shape != images.shape[1:]:
            raise SourceError(
                f"Image {i} of the {split} split is {tuple(x.shape)} but earlier ones are "
                f"{tuple(images.shape[1:])}; set data.image_size (and data.channels) so that all "
                "images are resized to one shape."
            )
        images[i], labels[i] = x, int(label)
        if time.monotonic() - last > 10:
            last = time.monotonic()
            log.info(f"Decoded {i + 1}/{n} images of {split} ({(i + 1) / (last - start):.0f}/s)")
    if images is None:
        raise SourceError(f"The {split} split has no images.")
    return images, labels


def check_labels(labels: torch.Tensor, classes: Sequence[str], where: str) -> None:
    """Labels must index ``classes``; otherwise name the split, the bad value and the fix."""
    if not len(labels):
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= len(classes):
        raise SourceError(
            f"{where}: labels must lie in [0, {len(classes)}) for {len(classes)} classes, found "
            f"[{lo}, {hi}]. Check the label column/array, or give the class names "
            "(data.class_names) so that every label has one."
        )
