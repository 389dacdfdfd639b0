"""What each ``data.augment`` key means, defined once for both augmentation pipelines.

:class:`AugmentSpec` parses and checks ``data.augment`` when the datamodule is built and maps
each key to its torchvision v2 operation. The per-sample pipeline composes those operations;
the batch pipeline (:class:`~src.data.components.transforms.BatchTransform`) reads the same
ranges for its tensor implementations of crop, flip and affine, and applies the same policy
and erasing operations image by image.
"""

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
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


class PadCrop(nn.Module):
    """``RandomCrop`` back to the input's own size after zero padding."""

    def __init__(self, padding: int):
        super().__init__()
        self.padding = padding

    def extra_repr(self) -> str:
        return f"padding={self.padding}"

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Zero-pad by ``padding`` and crop a random window of the input's size."""
        return v2.RandomCrop(size=tuple(img.shape[-2:]), padding=self.padding)(img)


def _number(key: str, value: Any, valid: Any, meaning: str) -> float:
    """``value`` as a float if ``valid(float)`` holds, else one error naming the key."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not math.isfinite(number) or not valid(number):
        raise ValueError(f"data.augment.{key}={value!r} is {meaning}.")
    return number


def _crop_padding(value: Any) -> int:
    meaning = "zero padding in pixels; use a whole number >= 0, e.g. 4, or 0 for no crop"
    return int(_number("crop_padding", value, lambda v: v >= 0 and v.is_integer(), meaning))


def _degrees(value: Any) -> float:
    meaning = "the largest rotation either way; use a number >= 0, e.g. 10, or 0 for none"
    return _number("degrees", value, lambda v: v >= 0, meaning)


def _translate(value: Any) -> float:
    meaning = (
        "the largest shift as a fraction of the image size; use a value in [0, 1], e.g. 0.1, "
        "or 0 for none"
    )
    return _number("translate", value, lambda v: 0 <= v <= 1, meaning)


def _scale(value: Any) -> tuple[float, float] | None:
    if not value:
        return None
    value = to_plain(value)
    try:
        bounds = tuple(float(s) for s in value) if isinstance(value, list | tuple) else ()
    except (TypeError, ValueError):
        bounds = ()
    if len(bounds) != 2 or not 0.0 < bounds[0] <= bounds[1] < math.inf:
        raise ValueError(
            f"data.augment.scale={value!r} is the zoom range [min, max]; use two "
            "numbers with 0 < min <= max, e.g. [0.9, 1.1], or null for none."
        )
    return bounds  # type: ignore[return-value]


@dataclass(frozen=True)
class AugmentSpec:
    """Training augmentation, the keys of ``data.augment``; all off by default.

    Steps run in this order: crop, flip, policy (uint8), affine, normalization, erasing.

    :param crop_padding: Zero padding in pixels for a random crop back to the input size
        (0: no crop).
    :param hflip: Flip horizontally with probability 0.5.
    :param degrees: Largest rotation either way, in degrees, of a random affine transform.
    :param translate: Largest shift of the random affine transform along each axis, as a
        fraction of the image size.
    :param scale: ``(min, max)`` zoom of the random affine transform, or ``None``.
    :param policy: Per-image augmentation policy on the uint8 images, one of :data:`POLICIES`
        (``randaugment``, ``trivialaugment``, ``autoaugment``, ``augmix``), or ``None``.
    :param policy_kwargs: Keyword arguments of the policy's torchvision class.
    :param random_erasing: Probability of ``v2.RandomErasing`` per normalized image (0: none).
    """

    crop_padding: int = 0
    hflip: bool = False
    degrees: float = 0.0
    translate: float = 0.0
    scale: tuple[float, float] | None = None
    policy: str | None = None
    policy_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    random_erasing: float = 0.0

    def __post_init__(self) -> None:
        # Parse and check every key once, here; both pipelines read only the parsed values.
        policy_kwargs = to_plain(dict(self.policy_kwargs or {}))
        build_policy(self.policy, policy_kwargs)  # a bad name or argument fails now
        build_erasing(self.random_erasing)
        parsed = {
            "crop_padding": _crop_padding(self.crop_padding),
            "hflip": bool(self.hflip),
            "degrees": _degrees(self.degrees),
            "translate": _translate(self.translate),
            "scale": _scale(self.scale),
            "policy": str(self.policy).lower() if self.policy is not None else None,
            "policy_kwargs": policy_kwargs,
            "random_erasing": float(self.random_erasing or 0.0),
        }
        for name, value in parsed.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_config(cls, augment: "Mapping[str, Any] | AugmentSpec | None") -> "AugmentSpec":
        """The parsed ``data.augment`` mapping (``None``: no augmentation), with one clear
        error for a misspelt key."""
        if isinstance(augment, AugmentSpec):
            return augment
        check_augment_keys(augment)
        return cls(**dict(augment or {}))

    @property
    def affine(self) -> bool:
        """Whether the random affine transform (rotation, translation, zoom) is on."""
        return bool(self.degrees or self.translate or self.scale)

    @property
    def augments(self) -> bool:
        """Whether any random augmentation is configured."""
        return bool(
            self.crop_padding
            or self.hflip
            or self.affine
            or self.policy is not None
            or self.random_erasing
        )

    def crop_op(self) -> PadCrop | None:
        """``crop_padding``: zero-pad, then a random crop back to the input size."""
        return PadCrop(self.crop_padding) if self.crop_padding else None

    def flip_op(self) -> v2.RandomHorizontalFlip | None:
        """``hflip``: a horizontal flip with probability 0.5."""
        return v2.RandomHorizontalFlip(p=0.5) if self.hflip else None

    def policy_op(self) -> nn.Module | None:
        """``policy`` and ``policy_kwargs``: the torchvision v2 policy."""
        return build_policy(self.policy, self.policy_kwargs)

    def affine_op(self) -> v2.RandomAffine | None:
        """``degrees``, ``translate``, ``scale``: ``v2.RandomAffine`` with bilinear sampling and
        zero fill (an unset range is passed as ``None``, so it draws nothing)."""
        if not self.affine:
            return None
        return v2.RandomAffine(
            degrees=self.degrees,
            translate=(self.translate, self.translate) if self.translate else None,
            scale=self.scale,
            interpolation=v2.InterpolationMode.BILINEAR,
        )

    def erasing_op(self) -> v2.RandomErasing | None:
        """``random_erasing``: ``v2.RandomErasing`` with that probability per image."""
        return build_erasing(self.random_erasing)

    def uint8_ops(self) -> list[nn.Module]:
        """The v2 operations before normalization, in order (crop, flip, policy, affine)."""
        ops = (self.crop_op(), self.flip_op(), self.policy_op(), self.affine_op())
        return [op for op in ops if op is not None]


def augment_keys() -> list[str]:
    """The keys ``data.augment`` takes, in the order they are applied and documented."""
    return [f.name for f in dataclasses.fields(AugmentSpec)]


def check_augment_keys(augment: Mapping[str, Any] | None) -> None:
    """One clear error for a misspelt ``data.augment`` key (instead of a ``TypeError``)."""
    known = augment_keys()
    unknown = sorted(set(augment or {}) - set(known))
    if unknown:
        raise ValueError(f"data.augment has unknown key(s) {unknown}; it takes {known}.")
