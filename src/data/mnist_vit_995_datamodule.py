"""MNIST with the ViT-995 recipe's input pipeline: its own normalization and augmentation.

Vision Transformers have no convolutional prior, so on MNIST they need augmentation to reach
99.5%: small random rotations, shifts and zooms of the training images (never of validation or
test images; :class:`~src.data.base_datamodule.InMemoryDataModule` applies augmentation only
while training). Inputs are scaled to [-1, 1], the usual ViT input range.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from src.data.mnist_datamodule import MNISTDataModule

#: Training augmentation of the recipe (``data.augment`` keys, see ``AugmentSpec``).
VIT_995_AUGMENT: Mapping[str, Any] = MappingProxyType(
    {"degrees": 10.0, "translate": 0.1, "scale": (0.9, 1.1)}
)


class MNISTViT995DataModule(MNISTDataModule):
    """MNIST for the ViT-995 recipe: [-1, 1] scaling and affine augmentation by default.

    Takes every argument of :class:`~src.data.mnist_datamodule.MNISTDataModule`; only the
    defaults of ``normalize`` and ``augment`` differ.

    :param augment: Training augmentation (default :data:`VIT_995_AUGMENT`; ``None``: none).
    """

    def __init__(self, augment: Mapping[str, Any] | None = VIT_995_AUGMENT, **kwargs: Any) -> None:
        super().__init__(augment=dict(augment) if augment else None, **kwargs)

    def default_normalize(self) -> dict[str, list[float]]:
        """Scale [0, 1] pixels to [-1, 1]."""
        return {"mean": [0.5], "std": [0.5]}
