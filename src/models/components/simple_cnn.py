"""SimpleCNN: two convolution blocks and a hidden linear layer, single-head or multihead.

With the defaults it is the spec's MNIST network (421,834 parameters; the spec rounds its count
to 421,482): ``Conv(1->32) -> BN -> ReLU -> MaxPool``, ``Conv(32->64) -> BN -> ReLU -> MaxPool``,
``AdaptiveAvgPool(7x7)``, ``Linear(3136->128) -> ReLU -> Dropout(0.25)``, then the head(s).
Wider arguments give the CIFAR variant (3.3M parameters) from the same class.
"""

from collections.abc import Mapping

import torch
from torch import nn

from src.models.components.heads import build_head


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """``3x3 Conv -> BatchNorm -> ReLU -> 2x2 MaxPool``: halves the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2),
    )


class SimpleCNN(nn.Module):
    """Small convolutional classifier for any image size (the adaptive pool fixes the FC input).

    :param in_channels: Image channels (1 for MNIST, 3 for CIFAR).
    :param image_size: Image height/width; the network accepts any size of at least 4 pixels,
        the argument documents the intended input and checks it is large enough.
    :param num_classes: Classes of the single head (ignored when ``heads_config`` is given).
    :param conv1_channels: Output channels of the first convolution block.
    :param conv2_channels: Output channels of the second convolution block.
    :param fc_hidden: Width of the hidden linear layer (the feature size the heads see).
    :param dropout: Dropout after the hidden linear layer.
    :param pool_size: Side of the adaptive average pool before the linear layer.
    :param heads_config: Optional ``{head: num_classes}``; the network then returns a dict.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        conv1_channels: int = 32,
        conv2_channels: int = 64,
        fc_hidden: int = 128,
        dropout: float = 0.25,
        pool_size: int = 7,
        heads_config: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        if image_size < 4:
            raise ValueError(
                f"SimpleCNN pools twice by 2 and needs images of at least 4x4, got {image_size}."
            )
        self.in_channels = in_channels
        self.image_size = image_size
        self.conv1_channels = conv1_channels
        self.conv2_channels = conv2_channels
        self.features = nn.Sequential(
            conv_block(in_channels, conv1_channels),
            conv_block(conv1_channels, conv2_channels),
            nn.AdaptiveAvgPool2d((pool_size, pool_size)),
            nn.Flatten(),
            nn.Linear(conv2_channels * pool_size * pool_size, fc_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.num_features = fc_hidden
        self.head = build_head(fc_hidden, num_classes, heads_config)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(B, C, H, W)`` to feature vectors ``(B, fc_hidden)``."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Map images to logits (single head) or ``{head: logits}`` (multihead)."""
        return self.head(self.forward_features(x))
