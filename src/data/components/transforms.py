"""Normalization and augmentation, batch-wise on the training device or per sample.

:class:`BatchTransform` works on whole uint8 batches (where the data lives, GPU included);
:func:`per_sample_transform` builds the torchvision v2 equivalent for the per-sample pipeline.
Both come from the same settings, so the two pipelines behave the same statistically:
zero-padded random crop, horizontal flip, an optional torchvision augmentation policy
(RandAugment, TrivialAugmentWide, AutoAugment, AugMix), random affine (rotation, translation,
scale), scaling to [0, 1] and per-channel normalization, then optional random erasing.
"""

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from src.utils.plain_data import to_plain

#: ``data.augment.policy`` names and the torchvision v2 policy each one builds.
POLICIES: dict[str, type[nn.Module]] = {
    "randaugment": v2.RandAugment,
    "trivialaugment": v2.TrivialAugmentWide,
    "autoaugment": v2.AutoAugment,
    "augmix": v2.AugMix,
}


def check_augment_keys(augment: Mapping[str, Any] | None) -> None:
    """One clear error for a misspelt ``data.augment`` key (instead of a ``TypeError``)."""
    known = [k for k in inspect.signature(BatchTransform).parameters if k not in ("mean", "std")]
    unknown = sorted(set(augment or {}) - set(known))
    if unknown:
        raise ValueError(f"data.augment has unknown key(s) {unknown}; it takes {known}.")


def build_policy(name: str | None, kwargs: Mapping[str, Any] | None = None) -> nn.Module | None:
    """The v2 policy ``data.augment.policy=name`` (``None``: no policy), built now so a bad name
    or keyword fails when the datamodule is created."""
    if name is None:
        if kwargs:
            raise ValueError(
                f"data.augment.policy_kwargs={dict(kwargs)} is set but data.augment.policy is "
                f"null; choose a policy ({' | '.join(POLICIES)}) or drop policy_kwargs."
            )
        return None
    cls = POLICIES.get(str(name).lower())
    if cls is None:
        raise ValueError(
            f"data.augment.policy={name!r} is unknown; choose one of {' | '.join(POLICIES)} "
            "(or null for none)."
        )
    try:
        return cls(**to_plain(dict(kwargs or {})))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"data.augment.policy_kwargs={dict(kwargs or {})} does not fit {cls.__name__} "
            f"({err}); see torchvision.transforms.v2.{cls.__name__} for its arguments."
        ) from None


def build_erasing(p: float | None) -> v2.RandomErasing | None:
    """``v2.RandomErasing`` with probability ``p`` per image (``0``/``None``: none)."""
    if not p:
        return None
    if not 0.0 < float(p) <= 1.0:
        raise ValueError(
            f"data.augment.random_erasing={p} is a probability per image; use a value in "
            "(0, 1], e.g. 0.25, or 0 for none."
        )
    return v2.RandomErasing(p=float(p))


def per_image(op: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply ``op`` to each image of ``x`` separately.

    A v2 transform called on a batch tensor draws one operation (and one magnitude, one erased
    box) for the whole batch; called image by image, each draws its own, as in a DataLoader.
    """
    return torch.stack([op(image) for image in x])


class BatchTransform(nn.Module):
    """Turn a uint8 batch ``(B, C, H, W)`` into a normalized float batch, augmenting if asked.

    :param mean: Per-channel mean of the [0, 1]-scaled data.
    :param std: Per-channel standard deviation of the [0, 1]-scaled data.
    :param crop_padding: Zero padding for a random crop back to the input size (0: no crop).
    :param hflip: Flip horizontally with probability 0.5.
    :param degrees: Maximum rotation in degrees of a random affine transform (0: none).
    :param translate: Maximum translation as a fraction of the image size.
    :param scale: ``(min, max)`` zoom of the random affine transform, or ``None``.
    :param policy: Per-image augmentation policy on the uint8 images, one of :data:`POLICIES`
        (``randaugment``, ``trivialaugment``, ``autoaugment``, ``augmix``), or ``None``.
    :param policy_kwargs: Keyword arguments of the policy's torchvision class.
    :param random_erasing: Probability of ``v2.RandomErasing`` per normalized image (0: none).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int = 0,
        hflip: bool = False,
        degrees: float = 0.0,
        translate: float = 0.0,
        scale: Sequence[float] | None = None,
        policy: str | None = None,
        policy_kwargs: Mapping[str, Any] | None = None,
        random_erasing: float = 0.0,
    ) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.crop_padding = int(crop_padding)
        self.hflip = bool(hflip)
        self.degrees = float(degrees)
        self.translate = float(translate)
        self.scale = tuple(scale) if scale else None
        self.policy_name = str(policy).lower() if policy is not None else None
        self.policy_kwargs = to_plain(dict(policy_kwargs or {}))
        self.policy = build_policy(policy, self.policy_kwargs)
        self.random_erasing = float(random_erasing or 0.0)
        self.erasing = build_erasing(random_erasing)

    @property
    def augments(self) -> bool:
        """Whether any random augmentation is configured."""
        return bool(
            self.crop_padding
            or self.hflip
            or self.degrees
            or self.translate
            or self.scale
            or self.policy is not None
            or self.erasing is not None
        )

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
        """Rotate, translate and scale each (float) image by its own random amounts."""
        b = x.shape[0]
        angle = (torch.rand(b, device=x.device) * 2 - 1) * math.radians(self.degrees)
        lo, hi = self.scale or (1.0, 1.0)
        zoom = torch.empty(b, device=x.device).uniform_(lo, hi)
        shift = (torch.rand(b, 2, device=x.device) * 2 - 1) * self.translate * 2  # grid units
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def per_sample(self, train: bool) -> v2.Compose:
        """The torchvision v2 per-sample equivalent of this transform (uint8 CHW input)."""
        return per_sample_transform(
            mean=self.mean.flatten().tolist(),
            std=self.std.flatten().tolist(),
            crop_padding=self.crop_padding,
            hflip=self.hflip,
            degrees=self.degrees,
            translate=self.translate,
            scale=self.scale,
            policy=self.policy_name,
            policy_kwargs=self.policy_kwargs,
            random_erasing=self.random_erasing,
            train=train,
        )

    def forward(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Normalize a uint8 batch; with ``train=True`` apply the configured augmentation first."""
        if train and self.crop_padding:
            x = self.random_crop(x)
        if train and self.hflip:
            x = self.random_flip(x)
        if train and self.policy is not None:
            x = per_image(self.policy, x)  # the policies work on uint8 images
        if train and (self.degrees or self.translate or self.scale):
            # Affine on [0, 1] data so zero padding is black, then normalize.
            x = self.random_affine(x.float().div_(255.0))
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        else:
            x = self.normalize(x)
        if train and self.erasing is not None:
            x = per_image(self.erasing, x)  # erased pixels are 0: the mean, after normalization
        return x


def per_sample_transform(
    mean: Sequence[float],
    std: Sequence[float],
    crop_padding: int = 0,
    hflip: bool = False,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: Sequence[float] | None = None,
    policy: str | None = None,
    policy_kwargs: Mapping[str, Any] | None = None,
    random_erasing: float = 0.0,
    train: bool = False,
) -> v2.Compose:
    """The torchvision v2 per-sample equivalent of :class:`BatchTransform` (uint8 CHW input)."""
    ops: list[nn.Module] = []
    if train and crop_padding:
        ops.append(_PadCrop(crop_padding))
    if train and hflip:
        ops.append(v2.RandomHorizontalFlip())
    if train and policy is not None:
        ops.append(build_policy(policy, policy_kwargs))
    if train and (degrees or translate or scale):
        ops.append(
            v2.RandomAffine(
                degrees=degrees,
                translate=(translate, translate) if translate else None,
                scale=tuple(scale) if scale else None,
                interpolation=v2.InterpolationMode.BILINEAR,
            )
        )
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    erasing = build_erasing(random_erasing) if train else None
    if erasing is not None:
        ops.append(erasing)
    return v2.Compose(ops)


class _PadCrop(nn.Module):
    """``RandomCrop`` back to the input's own size after zero padding."""

    def __init__(self, padding: int):
        super().__init__()
        self.padding = padding

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return v2.RandomCrop(size=tuple(img.shape[-2:]), padding=self.padding)(img)
