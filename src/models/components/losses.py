"""Feed any ``torch.nn`` loss the input form it expects.

Classification networks return raw logits and integer targets. Most losses take exactly that
(CrossEntropyLoss, MultiMarginLoss), but some want log-probabilities (NLLLoss, KLDivLoss),
probabilities (MSELoss, L1Loss, BCELoss, ...) or one-hot float targets. :class:`ClassificationLoss`
wraps a criterion and converts logits and targets once, so every loss works from the config.
"""

from collections.abc import Mapping
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

# What each loss wants as prediction: "logits", "log_probs" or "probs".
_PREDICTION_FORM: dict[type[nn.Module], str] = {
    nn.NLLLoss: "log_probs",
    nn.KLDivLoss: "log_probs",
    nn.MSELoss: "probs",
    nn.L1Loss: "probs",
    nn.SmoothL1Loss: "probs",
    nn.HuberLoss: "probs",
    nn.BCELoss: "probs",
}
# Losses whose target is a one-hot float tensor rather than class indices.
_ONE_HOT_TARGET: tuple[type[nn.Module], ...] = (
    nn.KLDivLoss,
    nn.MSELoss,
    nn.L1Loss,
    nn.SmoothL1Loss,
    nn.HuberLoss,
    nn.BCELoss,
    nn.BCEWithLogitsLoss,
    nn.MultiLabelSoftMarginLoss,
)
# Constructor arguments that must be tensors but arrive from YAML as lists.
_TENSOR_ARGS = ("weight", "pos_weight")


class ClassificationLoss(nn.Module):
    """Apply ``criterion`` to logits ``(B, C)`` and integer targets ``(B,)``.

    :param criterion: Any loss module from ``torch.nn`` (or one with the same call signature).
    """

    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion
        kind = type(criterion)
        self.prediction_form = next(
            (form for cls, form in _PREDICTION_FORM.items() if issubclass(kind, cls)), "logits"
        )
        self.one_hot_target = issubclass(kind, _ONE_HOT_TARGET)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Convert predictions and targets to the criterion's expected form and apply it."""
        if self.prediction_form == "log_probs":
            prediction = F.log_softmax(logits.float(), dim=-1)
        elif self.prediction_form == "probs":
            prediction = F.softmax(logits.float(), dim=-1)
        else:
            prediction = logits
        if self.one_hot_target:
            target = F.one_hot(target.long(), logits.shape[-1]).to(prediction.dtype)
        return self.criterion(prediction, target)

    def extra_repr(self) -> str:
        return f"prediction_form={self.prediction_form}, one_hot_target={self.one_hot_target}"


def instantiate_criterion(cfg: DictConfig | Mapping[str, Any] | nn.Module | None) -> nn.Module:
    """Instantiate a loss config, turning list-valued ``weight``/``pos_weight`` into tensors.

    ``None`` gives the default ``CrossEntropyLoss``; an ``nn.Module`` is returned unchanged.
    """
    if cfg is None:
        return nn.CrossEntropyLoss()
    if isinstance(cfg, nn.Module):
        return cfg
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    if "_target_" not in cfg:
        raise ValueError(
            f"A loss config needs a _target_ (e.g. torch.nn.CrossEntropyLoss), got {cfg}."
        )
    tensors = {
        key: torch.as_tensor(OmegaConf.to_container(cfg[key]), dtype=torch.float32)
        for key in _TENSOR_ARGS
        if key in cfg and OmegaConf.is_list(cfg[key])
    }
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in tensors])
    return hydra.utils.instantiate(cfg, **tensors)
