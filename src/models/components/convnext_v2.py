"""ConvNeXt-V2 for small images, assembled from timm's ConvNeXt stages.

timm supplies the ConvNeXt block (7x7 depthwise conv -> LayerNorm -> 4x MLP with Global
Response Normalization -> pointwise conv, stochastic depth) and the downsampling stages. This
file holds the small-input adaptation: a 2x2 stride-2 patch stem instead of ImageNet's 4x4
stride-4 one, so a 28x28 image runs its four stages at 14, 7, 3 and 1 pixels (32x32: 16, 8, 4,
2), and the LayerScale-free V2 block settings.
"""

from collections.abc import Mapping, Sequence

import torch
from timm.layers import LayerNorm2d, calculate_drop_path_rates
from timm.models.convnext import ConvNeXtStage
from torch import nn

from src.models.components.heads import build_head


class ConvNeXtV2(nn.Module):
    """ConvNeXt-V2: patch stem, four stages of GRN blocks, pooled LayerNorm features, head(s).

    :param in_channels: Image channels (1 for MNIST, 3 for CIFAR).
    :param image_size: Image height/width; must leave at least one pixel after the stem and
        three stride-2 downsamplings.
    :param num_classes: Classes of the single head (ignored when ``heads_config`` is given).
    :param depths: Blocks per stage.
    :param dims: Channels per stage (the last one is the feature size the heads see).
    :param stem_stride: Kernel and stride of the patch stem (2 for 28x28/32x32, 4 for ImageNet).
    :param kernel_size: Depthwise convolution kernel of every block.
    :param drop_path_rate: Stochastic-depth rate, increasing over the stages.
    :param dropout: Dropout on the pooled features before the head(s).
    :param heads_config: Optional ``{head: num_classes}``; the network then returns a dict.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        depths: Sequence[int] = (1, 1, 2, 1),
        dims: Sequence[int] = (8, 16, 32, 64),
        stem_stride: int = 2,
        kernel_size: int = 7,
        drop_path_rate: float = 0.0,
        dropout: float = 0.0,
        heads_config: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        depths, dims = list(depths), list(dims)
        if len(depths) != len(dims) or not depths:
            raise ValueError(f"depths {depths} and dims {dims} must list one value per stage.")
        if image_size // stem_stride < 2 ** (len(dims) - 1):
            raise ValueError(
                f"image_size {image_size} is too small for a stride-{stem_stride} stem and "
                f"{len(dims) - 1} downsamplings; use fewer stages or a smaller stem_stride."
            )
        self.in_channels = in_channels
        self.image_size = image_size
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, dims[0], kernel_size=stem_stride, stride=stem_stride),
            LayerNorm2d(dims[0]),
        )
        rates = calculate_drop_path_rates(drop_path_rate, depths, stagewise=True)
        in_dims = [dims[0], *dims[:-1]]
        self.stages = nn.Sequential(
            *[
                ConvNeXtStage(
                    in_dim,
                    out_dim,
                    kernel_size=kernel_size,
                    stride=1 if i == 0 else 2,
                    depth=depth,
                    drop_path_rates=rate,
                    ls_init_value=None,  # V2 drops LayerScale: GRN keeps training stable
                    use_grn=True,
                    norm_layer=LayerNorm2d,
                    norm_layer_cl=nn.LayerNorm,
                )
                for i, (in_dim, out_dim, depth, rate) in enumerate(
                    zip(in_dims, dims, depths, rates, strict=True)
                )
            ]
        )
        self.norm = nn.LayerNorm(dims[-1])
        self.dropout = nn.Dropout(dropout)
        self.num_features = dims[-1]
        self.apply(_init_weights)
        self.head = build_head(self.num_features, num_classes, heads_config)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(B, C, H, W)`` to pooled, normalized features ``(B, dims[-1])``."""
        x = self.stages(self.stem(x))
        return self.dropout(self.norm(x.mean(dim=(-2, -1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Map images to logits (single head) or ``{head: logits}`` (multihead)."""
        return self.head(self.forward_features(x))


def _init_weights(module: nn.Module) -> None:
    """ConvNeXt's initialisation: truncated normal (std 0.02) weights, zero biases."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
