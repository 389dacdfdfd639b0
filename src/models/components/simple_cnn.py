"""SimpleCNN: a stack of convolution blocks and a hidden linear layer, single-head or multihead.

With the defaults it is the spec's MNIST network (421,834 parameters; the spec rounds its count
to 421,482): ``Conv(1->32) -> BN -> ReLU -> MaxPool``, ``Conv(32->64) -> BN -> ReLU -> MaxPool``,
``AdaptiveAvgPool(7x7)``, ``Linear(3136->128) -> ReLU -> Dropout(0.25)``, then the head(s).
More blocks (``extra_channels``), two convolutions per block (``convs_per_block``) or no batch
norm (``batch_norm``, cheaper on CPUs) give the CIFAR and speedrun variants from the same class.
"""

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from src.models.components.heads import build_head


def conv_block(
    in_channels: int, out_channels: int, num_convs: int = 1, batch_norm: bool = True
) -> nn.Sequential:
    """``num_convs x (3x3 Conv -> [BatchNorm] -> ReLU)``, then a 2x2 max-pool (halves H and W)."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers.append(
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1)
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class SimpleCNN(nn.Module):
    """Small convolutional classifier for any image size (the adaptive pool fixes the FC input).

    :param in_channels: Image channels (1 for MNIST, 3 for CIFAR).
    :param image_size: Image height/width; the network accepts any size that survives its
        max-pools (``2 ** blocks`` pixels), the argument documents the intended input.
    :param num_classes: Classes of the single head (ignored when ``heads_config`` is given).
    :param conv1_channels: Output channels of the first convolution block.
    :param conv2_channels: Output channels of the second convolution block.
    :param extra_channels: Output channels of further blocks after the second (each pools by 2).
    :param convs_per_block: 3x3 convolutions in every block (VGG-style stages when 2).
    :param batch_norm: Batch norm after every convolution. Small MNIST nets reach the same
        accuracy without it and train ~1.6x faster on CPUs (see docs/speed.md).
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
        extra_channels: Sequence[int] = (),
        convs_per_block: int = 1,
        batch_norm: bool = True,
        fc_hidden: int = 128,
        dropout: float = 0.25,
        pool_size: int = 7,
        heads_config: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        widths = [conv1_channels, conv2_channels, *extra_channels]
        if image_size < 2 ** len(widths):
            raise ValueError(
                f"SimpleCNN with {len(widths)} blocks pools {len(widths)} times by 2 and needs "
                f"images of at least {2 ** len(widths)}x{2 ** len(widths)}, got {image_size}; "
                "use fewer extra_channels."
            )
        if convs_per_block < 1:
            raise ValueError(f"convs_per_block must be at least 1, got {convs_per_block}.")
        self.in_channels = in_channels
        self.image_size = image_size
        self.conv1_channels = conv1_channels
        self.conv2_channels = conv2_channels
        blocks = [
            conv_block(c_in, c_out, convs_per_block, batch_norm)
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
        ]
        self.features = nn.Sequential(
            *blocks,
            nn.AdaptiveAvgPool2d((pool_size, pool_size)),
            nn.Flatten(),
            nn.Linear(widths[-1] * pool_size * pool_size, fc_hidden),
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
