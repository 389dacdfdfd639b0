"""Vision Transformer for small images, on timm's VisionTransformer.

timm supplies the patch embedding, attention, MLP, LayerNorm, stochastic depth and weight
initialisation. This file holds the small-input choices: a patch size that divides 28 or 32,
learnable position embeddings and global average pooling over the patch tokens (no class
token), which trains better than a class token on tiny data sets.
"""

from collections.abc import Mapping

import torch
from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer
from torch import nn

from src.models.components.heads import build_head


class VisionTransformer(nn.Module):
    """ViT: patch embedding, ``depth`` transformer blocks, pooled tokens, linear head(s).

    :param in_channels: Image channels (1 for MNIST, 3 for CIFAR).
    :param image_size: Image height/width; must be divisible by ``patch_size``.
    :param num_classes: Classes of the single head (ignored when ``heads_config`` is given).
    :param patch_size: Side of the square patches (7 on 28x28 gives 16 patches, 4 gives 49).
    :param embed_dim: Token width.
    :param depth: Number of transformer blocks.
    :param num_heads: Attention heads per block (must divide ``embed_dim``).
    :param mlp_ratio: Hidden width of each block's MLP relative to ``embed_dim``.
    :param dropout: Dropout after the MLP/projection layers and on the pooled features.
    :param attn_dropout: Dropout on the attention weights.
    :param drop_path_rate: Stochastic-depth rate, increasing linearly over the blocks.
    :param class_token: Add a class token (pooled with the patch tokens when ``global_pool`` is
        ``"avg"``, used alone when it is ``"token"``).
    :param global_pool: ``"avg"`` (mean of the patch tokens) or ``"token"`` (class token).
    :param heads_config: Optional ``{head: num_classes}``; the network then returns a dict.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        patch_size: int = 7,
        embed_dim: int = 64,
        depth: int = 6,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        class_token: bool = False,
        global_pool: str = "avg",
        heads_config: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(
                f"image_size {image_size} is not divisible by patch_size {patch_size}; "
                "use e.g. patch_size 4 or 7 for 28x28 and 4 or 8 for 32x32."
            )
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}.")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=true.")
        self.in_channels = in_channels
        self.image_size = image_size
        self.backbone = TimmVisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            in_chans=in_channels,
            num_classes=0,  # our head replaces timm's classifier
            global_pool=global_pool,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            class_token=class_token,
            drop_rate=dropout,
            proj_drop_rate=dropout,
            attn_drop_rate=attn_dropout,
            drop_path_rate=drop_path_rate,
        )
        self.num_features = embed_dim
        self.head = build_head(embed_dim, num_classes, heads_config)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(B, C, H, W)`` to pooled, normalized token features ``(B, embed_dim)``."""
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Map images to logits (single head) or ``{head: logits}`` (multihead)."""
        return self.head(self.forward_features(x))
