"""SimpleDenseNet: the original template's fully connected baseline, for any input shape."""

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from src.models.components.heads import build_head


class SimpleDenseNet(nn.Module):
    """Three hidden ``Linear -> BatchNorm -> ReLU`` layers on the flattened image.

    The original signature (``input_size``, ``lin1_size``, ``lin2_size``, ``lin3_size``,
    ``output_size``) is kept; ``input_shape`` (C, H, W) may be given instead of ``input_size``.

    :param input_size: Number of input features (28 * 28 for MNIST).
    :param lin1_size: Width of the first hidden layer.
    :param lin2_size: Width of the second hidden layer.
    :param lin3_size: Width of the third hidden layer.
    :param output_size: Number of classes for a single head.
    :param input_shape: Optional (C, H, W); overrides ``input_size`` when given.
    :param heads_config: Optional ``{head: num_classes}`` for a multihead network.
    """

    def __init__(
        self,
        input_size: int = 784,
        lin1_size: int = 256,
        lin2_size: int = 256,
        lin3_size: int = 256,
        output_size: int = 10,
        input_shape: Sequence[int] | None = None,
        heads_config: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        if input_shape is not None:
            input_size = int(torch.Size(input_shape).numel())
        self.input_size = input_size
        sizes = [input_size, lin1_size, lin2_size, lin3_size]
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.BatchNorm1d(fan_out), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.num_features = lin3_size
        self.head = build_head(lin3_size, output_size, heads_config)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Map images ``(B, C, H, W)`` (or flat ``(B, input_size)``) to logits."""
        if x[0].numel() != self.input_size:
            raise ValueError(
                f"SimpleDenseNet expects {self.input_size} input features per sample but got "
                f"shape {tuple(x.shape[1:])}; set model.net.input_size (or input_shape) to match the data."
            )
        return self.head(self.features(x))
