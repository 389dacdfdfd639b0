"""EfficientNet for small images, built with timm's EfficientNet and block builder.

timm supplies the MBConv/depthwise-separable blocks, squeeze-excitation, stochastic depth and
the width/depth scaling rules. This file holds the small-input adaptation: the EfficientNet-B0
stage layout with fewer stride-2 stages (a 28x28 or 32x32 image is downsampled 8 times in all
instead of 32 times), and the width/depth multipliers that make the size presets.
"""

from collections.abc import Mapping, Sequence
from functools import partial

import torch
from timm.models._efficientnet_builder import decode_arch_def, round_channels
from timm.models.efficientnet import EfficientNet
from torch import nn

from src.models.components.heads import build_head

#: EfficientNet-B0 stages (timm block strings: type, repeats, kernel, stride, expansion,
#: channels, squeeze-excitation) with strides for small inputs: the stem halves 28 -> 14,
#: then only two stages halve again (14 -> 7 -> 4) where B0 halves four times.
SMALL_INPUT_ARCH: tuple[tuple[str, ...], ...] = (
    ("ds_r1_k3_s1_e1_c16_se0.25",),
    ("ir_r2_k3_s1_e6_c24_se0.25",),
    ("ir_r2_k5_s2_e6_c40_se0.25",),
    ("ir_r3_k3_s2_e6_c80_se0.25",),
    ("ir_r3_k5_s1_e6_c112_se0.25",),
    ("ir_r4_k5_s1_e6_c192_se0.25",),
    ("ir_r1_k3_s1_e6_c320_se0.25",),
)


class SimpleEfficientNet(nn.Module):
    """EfficientNet (MBConv + squeeze-excitation) scaled by width and depth multipliers.

    :param in_channels: Image channels (1 for MNIST, 3 for CIFAR).
    :param image_size: Image height/width; at least 8 so the last stage still has pixels.
    :param num_classes: Classes of the single head (ignored when ``heads_config`` is given).
    :param width_mult: Channel multiplier of every stage (EfficientNet-B0 is 1.0).
    :param depth_mult: Block-repeat multiplier of every stage (EfficientNet-B0 is 1.0).
    :param stem_channels: Stem convolution channels before width scaling.
    :param head_channels: Channels of the final 1x1 convolution before width scaling (the
        feature size the heads see).
    :param num_stages: Use only the first ``num_stages`` stages of the layout (tiny models).
    :param dropout: Dropout on the pooled features.
    :param drop_path_rate: Stochastic-depth rate, increasing linearly over the blocks.
    :param arch: Stage layout as timm block strings; defaults to :data:`SMALL_INPUT_ARCH`.
    :param heads_config: Optional ``{head: num_classes}``; the network then returns a dict.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        stem_channels: int = 32,
        head_channels: int = 1280,
        num_stages: int | None = None,
        dropout: float = 0.2,
        drop_path_rate: float = 0.0,
        arch: Sequence[Sequence[str]] | None = None,
        heads_config: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(
                f"SimpleEfficientNet downsamples 8x and needs images of at least 8x8, got {image_size}."
            )
        stages = [list(stage) for stage in (arch or SMALL_INPUT_ARCH)][:num_stages]
        round_chs = partial(round_channels, multiplier=width_mult)
        self.in_channels = in_channels
        self.image_size = image_size
        self.backbone = EfficientNet(
            block_args=decode_arch_def(stages, depth_multiplier=depth_mult),
            num_classes=0,  # our head replaces timm's classifier
            num_features=round_chs(head_channels),
            in_chans=in_channels,
            stem_size=stem_channels,
            round_chs_fn=round_chs,
            drop_rate=dropout,
            drop_path_rate=drop_path_rate,
        )
        self.num_features = self.backbone.num_features
        self.head = build_head(self.num_features, num_classes, heads_config)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(B, C, H, W)`` to pooled feature vectors ``(B, num_features)``."""
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Map images to logits (single head) or ``{head: logits}`` (multihead)."""
        return self.head(self.forward_features(x))
