"""Classification heads shared by every backbone.

A backbone produces a feature vector; :func:`build_head` turns it into logits. With
``heads_config=None`` the head is one ``nn.Linear`` (the network returns a tensor); with a
mapping ``{head_name: num_classes}`` it is a :class:`MultiHead` and the network returns a dict.
"""

from collections.abc import Mapping

import torch
from torch import nn


class MultiHead(nn.Module):
    """One linear classifier per task on top of shared features.

    :param in_features: Size of the feature vector each head receives.
    :param heads_config: Ordered mapping ``{head_name: num_classes}``; the first head is primary.
    :param dropout: Dropout applied to the shared features before every head.
    """

    def __init__(self, in_features: int, heads_config: Mapping[str, int], dropout: float = 0.0):
        super().__init__()
        if not heads_config:
            raise ValueError("heads_config must name at least one head, e.g. {digit: 10}.")
        for name, n in heads_config.items():
            if int(n) < 1:
                raise ValueError(f"Head '{name}' needs at least one class, got {n}.")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.heads = nn.ModuleDict(
            {name: nn.Linear(in_features, int(n)) for name, n in heads_config.items()}
        )

    @property
    def heads_config(self) -> dict[str, int]:
        """The ``{head_name: num_classes}`` mapping this module was built with."""
        return {name: layer.out_features for name, layer in self.heads.items()}

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``{head_name: logits}`` for a batch of feature vectors."""
        features = self.dropout(features)
        return {name: layer(features) for name, layer in self.heads.items()}


def build_head(
    in_features: int,
    num_classes: int,
    heads_config: Mapping[str, int] | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """Build a single-task ``nn.Linear`` head or, given ``heads_config``, a :class:`MultiHead`."""
    if heads_config:
        return MultiHead(in_features, dict(heads_config), dropout)
    linear = nn.Linear(in_features, num_classes)
    return nn.Sequential(nn.Dropout(dropout), linear) if dropout > 0 else linear
