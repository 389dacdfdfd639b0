"""SimpleCNN: a stack of convolution blocks and a hidden linear layer, single-head or multihead.

With the defaults it is the classic two-block MNIST CNN (421,834 parameters):
``Conv(1->32) -> BN -> ReLU -> MaxPool``, ``Conv(32->64) -> BN -> ReLU -> MaxPool``,
``AdaptiveAvgPool(7x7)``, ``Linear(3136->128) -> ReLU -> Dropout(0.25)``, then the head(s).
More blocks (``extra_channels``), two convolutions per block (``convs_per_block``), no batch
norm or batch norm after the pool (cheaper on CPUs) and a border crop of the input give the
CIFAR and speedrun variants from the same class.

Each block max-pools *before* its last ReLU: ``max`` and ``ReLU`` commute, so the function is
the one above, but the ReLU (and its backward pass) runs on 4x fewer values.
"""

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from src.models.components.heads import build_head


def conv_block(
    in_channels: int,
    out_channels: int,
    num_convs: int = 1,
    batch_norm: bool = True,
    norm_after_pool: bool = False,
) -> nn.Sequential:
    """``num_convs x (3x3 Conv -> [BatchNorm] -> ReLU)`` and a 2x2 max-pool (halves H and W).

    The pool comes before the last ReLU (same function, cheaper). With ``norm_after_pool`` the
    last batch norm also moves after the pool (airbench's order): it then normalizes the pooled
    map, a different function that costs 4x less.
    """
    layers: list[nn.Module] = []
    for i in range(num_convs):
        last = i == num_convs - 1
        layers.append(
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1)
        )
        if last and norm_after_pool:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        if last and not norm_after_pool:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class FeaturePool(nn.AdaptiveAvgPool2d):
    """``AdaptiveAvgPool2d`` that passes maps already at the output size through untouched
    (PyTorch would still run the pool and its backward pass as a copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pool to ``output_size`` unless ``x`` already has that size."""
        size = self.output_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(x.shape[-2:]) == size:
            return x
        return super().forward(x)


class BorderCrop(nn.Module):
    """Drop ``pixels`` rows and columns from every border of ``(B, C, H, W)`` images."""

    def __init__(self, pixels: int) -> None:
        super().__init__()
        self.pixels = pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The central ``(H - 2p, W - 2p)`` region of ``x``."""
        p = self.pixels
        return x[..., p : x.shape[-2] - p, p : x.shape[-1] - p] if p else x

    def extra_repr(self) -> str:
        return f"pixels={self.pixels}"


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
    :param batch_norm: Batch norm after every convolution (BN kernels are a large share of a
        small net's CPU step; see docs/speed.md).
    :param norm_after_pool: Move each block's last batch norm after its max-pool (4x cheaper;
        normalizes the pooled map, so not the same function).
    :param input_crop: Pixels dropped from every border of the input before the first
        convolution. MNIST digits sit in the central 20x20 box: ``2`` feeds 24x24 images and
        saves ~27% of the convolution FLOPs. Data, predict and export keep the full image size.
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
        norm_after_pool: bool = False,
        input_crop: int = 0,
        fc_hidden: int = 128,
        dropout: float = 0.25,
        pool_size: int = 7,
        heads_config: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        widths = [conv1_channels, conv2_channels, *extra_channels]
        if input_crop < 0 or 2 * input_crop >= image_size:
            raise ValueError(
                f"input_crop={input_crop} must be at least 0 and leave pixels of a "
                f"{image_size}x{image_size} image (less than {(image_size + 1) // 2})."
            )
        if image_size - 2 * input_crop < 2 ** len(widths):
            raise ValueError(
                f"SimpleCNN with {len(widths)} blocks pools {len(widths)} times by 2 and needs "
                f"images of at least {2 ** len(widths)}x{2 ** len(widths)}, got "
                f"{image_size - 2 * input_crop} (image_size={image_size}, input_crop={input_crop}); "
                "use fewer extra_channels or a smaller input_crop."
            )
        if convs_per_block < 1:
            raise ValueError(f"convs_per_block must be at least 1, got {convs_per_block}.")
        self.in_channels = in_channels
        self.image_size = image_size
        self.conv1_channels = conv1_channels
        self.conv2_channels = conv2_channels
        blocks = [
            conv_block(c_in, c_out, convs_per_block, batch_norm, norm_after_pool)
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
        ]
        self.crop = BorderCrop(input_crop)
        self.features = nn.Sequential(
            *blocks,
            FeaturePool((pool_size, pool_size)),
            nn.Flatten(),
            nn.Linear(widths[-1] * pool_size * pool_size, fc_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.num_features = fc_hidden
        self.head = build_head(fc_hidden, num_classes, heads_config)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(B, C, H, W)`` to feature vectors ``(B, fc_hidden)``."""
        return self.features(self.crop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Map images to logits (single head) or ``{head: logits}`` (multihead)."""
        return self.head(self.forward_features(x))
