"""Feed any ``torch.nn`` loss the input form it expects.

Classification networks return raw logits and integer targets. Most losses take exactly that
(CrossEntropyLoss, MultiMarginLoss), but some want log-probabilities (NLLLoss, KLDivLoss),
probabilities (MSELoss, L1Loss, BCELoss, ...) or one-hot float targets. :class:`ClassificationLoss`
wraps a criterion and converts logits and targets once, so every loss works from the config.

Soft targets (class probabilities ``(B, C)``, e.g. from MixUp/CutMix) pass through unchanged:
CrossEntropyLoss takes probabilities, and the one-hot losses take any target of that shape.
Losses that only understand class indices (NLLLoss, MultiMarginLoss) are rejected by
:meth:`ClassificationLoss.check_soft_targets` when mixing is configured.

Losses that need targets of another form (pairs of embeddings, triplets, sequences, multi-label
index lists, ...) cannot be adapted: :class:`ClassificationLoss` rejects them when it is built,
by name and by a dry run on a tiny batch, with a message listing the supported forms.
"""

import warnings
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
# Losses whose targets have another form than one class per image: why each cannot be adapted.
_UNSUPPORTED: dict[type[nn.Module], str] = {
    nn.CosineEmbeddingLoss: "compares pairs of embeddings with +1/-1 targets",
    nn.TripletMarginLoss: "takes (anchor, positive, negative) embedding triplets",
    nn.TripletMarginWithDistanceLoss: "takes (anchor, positive, negative) embedding triplets",
    nn.MarginRankingLoss: "ranks pairs of scores with +1/-1 targets",
    nn.HingeEmbeddingLoss: "takes distances with +1/-1 targets",
    nn.SoftMarginLoss: "takes +1/-1 targets of the prediction's shape",
    nn.CTCLoss: "aligns sequences (log-probabilities over time and target sequences)",
    nn.MultiLabelMarginLoss: "takes lists of target class indices padded with -1 (multi-label)",
    nn.GaussianNLLLoss: "needs a predicted variance",
    nn.PoissonNLLLoss: "takes counts, not classes",
}
# Losses that take class indices only: a (B, C) probability target means nothing to them.
_INDEX_ONLY: tuple[type[nn.Module], ...] = (nn.NLLLoss, nn.MultiMarginLoss)
SUPPORTED_FORMS = (
    "logits + class indices (CrossEntropyLoss, MultiMarginLoss); "
    "log-probabilities + class indices (NLLLoss); "
    "log-probabilities + one-hot (KLDivLoss); "
    "probabilities + one-hot (MSELoss, L1Loss, SmoothL1Loss, HuberLoss, BCELoss); "
    "logits + one-hot (BCEWithLogitsLoss, MultiLabelSoftMarginLoss); "
    "or a custom module called as loss(logits (B, C), class indices (B,)) -> scalar"
)


class UnsupportedLossError(ValueError):
    """The loss cannot be fed logits and one class index per image."""


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
        self._dry_run()

    def _dry_run(self) -> None:
        """Reject losses that need other targets now, not at the first training step."""
        kind = type(self.criterion)
        reason = next((why for cls, why in _UNSUPPORTED.items() if issubclass(kind, cls)), None)
        if reason is not None:
            raise UnsupportedLossError(
                f"{kind.__name__} {reason}, so it cannot train a classifier from one class "
                f"index per image. Supported loss forms: {SUPPORTED_FORMS}."
            )
        # Class count from a per-class weight if there is one; batch size != classes, so a
        # loss that wrongly broadcasts (B,) targets against (B, C) logits fails here.
        weight = next(
            (w for w in (getattr(self.criterion, a, None) for a in _TENSOR_ARGS) if w is not None),
            None,
        )
        classes = int(weight.numel()) if isinstance(weight, torch.Tensor) and weight.ndim else 3
        # Fixed values: drawing random ones would shift the seeded global RNG.
        logits = torch.linspace(-2.0, 2.0, (classes + 1) * classes).reshape(classes + 1, classes)
        target = torch.arange(classes + 1) % classes
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. KLDivLoss's reduction advice, seen later
                loss = self(logits, target)
        except Exception as err:  # noqa: BLE001 - any failure means the loss does not fit
            raise UnsupportedLossError(
                f"{self.criterion!r} fails on classification logits {tuple(logits.shape)} with "
                f"class-index targets {tuple(target.shape)} ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). Supported loss forms: "
                f"{SUPPORTED_FORMS}."
            ) from err
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise UnsupportedLossError(
                f"{self.criterion!r} returns {shape}, not one number per batch; use "
                "reduction='mean' (or 'sum'/'batchmean'), not 'none'."
            )

    def check_soft_targets(self, where: str) -> None:
        """Fail now, naming config key ``where``, if the criterion cannot take probabilities.

        torch.nn losses are judged by class; a custom module must accept a ``(B, C)``
        probability target in a dry run and return one number.
        """
        kind = type(self.criterion)
        name = kind.__name__
        fix = (
            "use CrossEntropyLoss (or KLDivLoss, BCEWithLogitsLoss, MSELoss), or set model.mix=null"
        )
        if issubclass(kind, _INDEX_ONLY):
            raise UnsupportedLossError(
                f"model.mix makes soft targets (class probabilities), but {where} is {name}, "
                f"which takes class indices only; {fix}."
            )
        if issubclass(kind, nn.CrossEntropyLoss) or self.one_hot_target:
            return
        logits = torch.linspace(-2.0, 2.0, 12).reshape(4, 3)
        target = torch.full((4, 3), 1.0 / 3)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loss = self(logits, target)
            ok = isinstance(loss, torch.Tensor) and loss.numel() == 1
        except Exception:  # noqa: BLE001 - any failure means it cannot take soft targets
            ok = False
        if not ok:
            raise UnsupportedLossError(
                f"model.mix makes soft targets (class probabilities (B, C)), but {where} "
                f"({self.criterion!r}) fails on them; {fix}."
            )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Convert predictions and targets to the criterion's expected form and apply it.

        ``target`` holds class indices ``(B,)`` or class probabilities ``(B, C)``.
        """
        if self.prediction_form == "log_probs":
            prediction = F.log_softmax(logits.float(), dim=-1)
        elif self.prediction_form == "probs":
            prediction = F.softmax(logits.float(), dim=-1)
        else:
            prediction = logits
        if self.one_hot_target and target.ndim == logits.ndim - 1:
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
