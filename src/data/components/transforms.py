"""Normalization and augmentation, batch-wise on the training device or per sample.

:class:`BatchTransform` works on whole uint8 batches (where the data lives, GPU included);
:func:`per_sample_transform` builds the torchvision v2 equivalent for the per-sample pipeline.
Both read one :class:`~src.data.components.augment_spec.AugmentSpec` (what each
``data.augment`` key means), so the two pipelines behave the same statistically:
zero-padded random crop, horizontal flip, an optional torchvision augmentation policy
(RandAugment, TrivialAugmentWide, AutoAugment, AugMix), random affine (rotation, translation,
scale), scaling to [0, 1] and per-channel normalization, then optional random erasing.
"""

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from src.data.components.augment_spec import (
    POLICIES,
    AugmentSpec,
    build_erasing,
    build_policy,
    check_augment_keys,
)

__all__ = [
    "POLICIES",
    "AugmentSpec",
    "BatchTransform",
    "build_erasing",
    "build_policy",
    "check_augment_keys",
    "per_image",
    "per_sample_pipeline",
    "per_sample_transform",
]


def per_image(op: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply ``op`` to each image of ``x`` separately.

    A v2 transform called on a batch tensor draws one operation (and one magnitude, one erased
    box) for the whole batch; called image by image, each draws its own, as in a DataLoader.
    """
    return torch.stack([op(image) for image in x])


def _from_spec(key: str) -> property:
    """A read-only attribute that returns ``spec.<key>``."""
    return property(lambda self: getattr(self.spec, key), doc=f"``spec.{key}``")


class BatchTransform(nn.Module):
    """Turn a uint8 batch ``(B, C, H, W)`` into a normalized float batch, augmenting if asked.

    Crop and flip are tensor operations on the whole batch, the affine transform one
    ``grid_sample``; the policy and erasing are the :class:`AugmentSpec`'s v2 operations, image by image.

    :param mean: Per-channel mean of the [0, 1]-scaled data.
    :param std: Per-channel standard deviation of the [0, 1]-scaled data.
    :param spec: The augmentation (``None``: built from ``augment``).
    :param augment: The ``data.augment`` keys (see :class:`AugmentSpec`), when no ``spec``.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        spec: AugmentSpec | None = None,
        **augment: Any,
    ) -> None:
        super().__init__()
        if spec is not None and augment:
            raise ValueError(
                f"BatchTransform takes an AugmentSpec or augment keys, not both: {augment}"
            )
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.spec = spec if spec is not None else AugmentSpec.from_config(augment)
        self.policy = self.spec.policy_op()
        self.erasing = self.spec.erasing_op()

    # The parsed keys, read from the AugmentSpec so both pipelines share one meaning of each.
    crop_padding = _from_spec("crop_padding")
    hflip = _from_spec("hflip")
    degrees = _from_spec("degrees")
    translate = _from_spec("translate")
    scale = _from_spec("scale")
    policy_name = _from_spec("policy")
    policy_kwargs = _from_spec("policy_kwargs")
    random_erasing = _from_spec("random_erasing")

    @property
    def augments(self) -> bool:
        """Whether any random augmentation is configured."""
        return self.spec.augments

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float32 in [0, 1] -> per-channel standardization."""
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x.float().div_(255.0) - mean) / std

    def random_crop(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad by ``crop_padding`` and crop each image back at its own random offset."""
        b, c, h, w = x.shape
        p = self.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b, 1, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * p + 1, (b, 1, 1, 1), device=x.device)
        rows = (dy + torch.arange(h, device=x.device).view(1, 1, h, 1)).expand(b, c, h, w + 2 * p)
        cols = (dx + torch.arange(w, device=x.device).view(1, 1, 1, w)).expand(b, c, h, w)
        return padded.gather(2, rows).gather(3, cols)

    def random_flip(self, x: torch.Tensor) -> torch.Tensor:
        """Flip each image horizontally with probability 0.5."""
        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
        return torch.where(flip, x.flip(-1), x)

    def random_affine(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate, translate and scale each (float) image by its own random amounts, drawn
        from the same ranges as ``v2.RandomAffine`` (:meth:`AugmentSpec.affine_op`)."""
        b = x.shape[0]
        angle = (torch.rand(b, device=x.device) * 2 - 1) * math.radians(self.degrees)
        lo, hi = self.scale or (1.0, 1.0)
        zoom = torch.empty(b, device=x.device).uniform_(lo, hi)
        # affine_grid spans [-1, 1]: a shift of a fraction t of the image is 2t grid units.
        shift = (torch.rand(b, 2, device=x.device) * 2 - 1) * self.translate * 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def per_sample(self, train: bool) -> v2.Compose:
        """The torchvision v2 per-sample equivalent of this transform (uint8 CHW input)."""
        return per_sample_pipeline(
            self.spec, self.mean.flatten().tolist(), self.std.flatten().tolist(), train
        )

    def forward(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Normalize a uint8 batch; with ``train=True`` apply the configured augmentation first."""
        if train and self.crop_padding:
            x = self.random_crop(x)
        if train and self.hflip:
            x = self.random_flip(x)
        if train and self.policy is not None:
            x = per_image(self.policy, x)  # the policies work on uint8 images
        if train and self.spec.affine:
            # Affine on [0, 1] data so zero padding is black, then normalize.
            x = self.random_affine(x.float().div_(255.0))
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        else:
            x = self.normalize(x)
        if train and self.erasing is not None:
            x = per_image(self.erasing, x)  # erased pixels are 0: the mean, after normalization
        return x


def per_sample_pipeline(
    spec: AugmentSpec, mean: Sequence[float], std: Sequence[float], train: bool = False
) -> v2.Compose:
    """The per-sample v2 pipeline of ``spec`` (uint8 CHW input): with ``train=True`` its
    augmentation, then scaling to [0, 1], normalization and, if configured, erasing."""
    ops: list[nn.Module] = spec.uint8_ops() if train else []
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    erasing = spec.erasing_op() if train else None
    if erasing is not None:
        ops.append(erasing)
    return v2.Compose(ops)


def per_sample_transform(
    mean: Sequence[float], std: Sequence[float], train: bool = False, **augment: Any
) -> v2.Compose:
    """The torchvision v2 per-sample equivalent of :class:`BatchTransform` (uint8 CHW input);
    ``augment`` takes the ``data.augment`` keys (see :class:`AugmentSpec`)."""
    return per_sample_pipeline(AugmentSpec.from_config(augment), mean, std, train)
