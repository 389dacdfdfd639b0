"""Feed any ``torch.nn`` loss the input form it expects.

Classification networks return raw logits and integer targets. Most losses take exactly that
(CrossEntropyLoss, MultiMarginLoss), but some want log-probabilities (NLLLoss, KLDivLoss),
probabilities (MSELoss, L1Loss, BCELoss, ...) or one-hot float targets. :class:`ClassificationLoss`
wraps a criterion and converts logits and targets once, so every loss works from the config.

Soft targets (class probabilities ``(B, C)``, e.g. from MixUp/CutMix) pass through unchanged:
CrossEntropyLoss takes probabilities, and the one-hot losses take any target of that shape.
Losses that only understand class indices (NLLLoss, MultiMarginLoss) are rejected by
:meth:`ClassificationLoss.check_soft_targets` when mixing is configured.

:func:`build_mix` and :func:`mix_batch` make those soft targets for ``model.mix``:
``v2.MixUp``/``v2.CutMix`` mix each image with its neighbour in the (shuffled) batch. With several
heads, every head's one-hot targets are mixed in the same call, concatenated into one
probability tensor, so all heads share the pairing and the mixing weight. The random draws
(mixing weight, CutMix box, MixUp-or-CutMix choice) come from the global torch RNG, which the
checkpoint saves, so mixed runs resume exactly.

Losses that need targets of another form (pairs of embeddings, triplets, sequences, multi-label
index lists, ...) cannot be adapted: :class:`ClassificationLoss` rejects them when it is built,
by name and by a dry run on a tiny batch, with a message listing the supported forms. The dry
run uses the head's class count when the module passes it, so the model/data check
(:meth:`ClassificationLoss.check_classes`) only runs the loss again for a class count it has
not seen (a class ``weight`` of another length than the head's classes).
"""

import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchvision.transforms import v2

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
    :param num_classes: The head's class count, for the dry run; a per-class ``weight`` sets it
        otherwise (3 if neither), and a mismatch of the two is left to :meth:`check_classes`.
    """

    def __init__(self, criterion: nn.Module, num_classes: int | None = None):
        super().__init__()
        self.criterion = criterion
        kind = type(criterion)
        self.prediction_form = next(
            (form for cls, form in _PREDICTION_FORM.items() if issubclass(kind, cls)), "logits"
        )
        self.one_hot_target = issubclass(kind, _ONE_HOT_TARGET)
        #: Class counts the loss has been run on without error (the dry run's, then the checks').
        self.checked_classes: set[int] = set()
        self._dry_run(num_classes)

    def _run_on(self, classes: int) -> Any:
        """The loss of fixed logits ``(classes + 1, classes)`` and integer targets, computed
        without gradients or warnings on the device of the criterion's buffers."""
        device = next(self.buffers(), torch.empty(0)).device
        # Fixed values: drawing random ones would shift the seeded global RNG; batch size !=
        # classes, so a loss that wrongly broadcasts (B,) targets against (B, C) logits fails.
        logits = torch.linspace(-2.0, 2.0, (classes + 1) * classes, device=device)
        target = torch.arange(classes + 1, device=device) % classes
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. KLDivLoss's reduction advice, seen later
            return self(logits.reshape(classes + 1, classes), target)

    def _dry_run(self, num_classes: int | None) -> None:
        """Reject losses that need other targets now, not at the first training step."""
        kind = type(self.criterion)
        reason = next((why for cls, why in _UNSUPPORTED.items() if issubclass(kind, cls)), None)
        if reason is not None:
            raise UnsupportedLossError(
                f"{kind.__name__} {reason}, so it cannot train a classifier from one class "
                f"index per image. Supported loss forms: {SUPPORTED_FORMS}."
            )
        # Class count from a per-class weight if there is one: a weight of the wrong length is
        # the head's problem, reported by check_classes with the head's name.
        weight = next(
            (w for w in (getattr(self.criterion, a, None) for a in _TENSOR_ARGS) if w is not None),
            None,
        )
        if isinstance(weight, torch.Tensor) and weight.ndim:
            classes = int(weight.numel())
        else:
            classes = num_classes or 3
        try:
            loss = self._run_on(classes)
        except Exception as err:  # noqa: BLE001 - any failure means the loss does not fit
            raise UnsupportedLossError(
                f"{self.criterion!r} fails on classification logits {(classes + 1, classes)} "
                f"with class-index targets {(classes + 1,)} ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). Supported loss forms: "
                f"{SUPPORTED_FORMS}."
            ) from err
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise UnsupportedLossError(
                f"{self.criterion!r} returns {shape}, not one number per batch; use "
                "reduction='mean' (or 'sum'/'batchmean'), not 'none'."
            )
        self.checked_classes.add(classes)

    def check_classes(self, num_classes: int, head: str) -> None:
        """Raise ``ValueError`` naming ``head`` if the loss fails on ``num_classes`` classes
        (e.g. a class ``weight`` with another number of values); a class count already run
        without error is not run again."""
        if num_classes in self.checked_classes:
            return
        try:
            self._run_on(num_classes)
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            raise ValueError(
                f"The loss of head '{head}' ({self.criterion!r}) fails on this model's "
                f"{num_classes} classes: {type(err).__name__}: {str(err).splitlines()[0]}. Check "
                f"its arguments (a class `weight` needs one value per class, here {num_classes})."
            ) from err
        self.checked_classes.add(num_classes)

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

    ``None`` gives the default ``CrossEntropyLoss``; an ``nn.Module`` is returned unchanged. A
    ``null`` argument the loss does not take is dropped: the shared config lists
    ``weight: null`` so that ``model.criterion.weight=[...]`` needs no ``+``, and it must not
    break ``model.criterion._target_=torch.nn.MSELoss``.
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
    accepted = _accepted_arguments(str(cfg._target_))
    keep = [
        k
        for k in cfg
        if k not in tensors and (cfg[k] is not None or accepted is None or k in accepted)
    ]
    return hydra.utils.instantiate(OmegaConf.masked_copy(cfg, keep), **tensors)


def _accepted_arguments(target: str) -> set[str] | None:
    """The keyword arguments of loss class ``target``; ``None`` when it takes ``**kwargs`` or
    cannot be inspected (then every argument is passed on, and Hydra reports a bad one)."""
    hydra_keys = {"_target_", "_partial_", "_convert_", "_recursive_"}
    try:
        cls = hydra.utils.get_class(target)
        parameters = inspect.signature(cls).parameters.values()
    except (ImportError, ValueError, TypeError):
        return None
    if cls.__init__ is nn.Module.__init__:  # takes **kwargs only to refuse them
        return hydra_keys
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters} | hydra_keys


# ------------------------------------------------------------ MixUp / CutMix
#: Keys ``model.mix`` accepts.
MIX_KEYS = ("mixup_alpha", "cutmix_alpha")


def build_mix(cfg: Mapping[str, Any] | None) -> nn.Module | None:
    """The v2 transform for ``model.mix``: MixUp, CutMix, or a random choice of the two per batch.

    :param cfg: ``{mixup_alpha: a, cutmix_alpha: b}``; an alpha of 0 (or left out) turns that
        method off; ``None`` turns mixing off.
    """
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping):
        raise ValueError(
            f"model.mix={cfg!r} must be a mapping such as {{mixup_alpha: 0.8, cutmix_alpha: 1.0}} "
            "(or null for no mixing)."
        )
    unknown = sorted(set(cfg) - set(MIX_KEYS))
    if unknown:
        raise ValueError(
            f"model.mix has unknown key(s) {unknown}; it takes {list(MIX_KEYS)}, "
            "e.g. model.mix={mixup_alpha: 0.8, cutmix_alpha: 1.0}."
        )
    alphas = {key: cfg.get(key) or 0.0 for key in MIX_KEYS}
    for key, alpha in alphas.items():
        if not isinstance(alpha, int | float) or alpha < 0:
            raise ValueError(
                f"model.mix.{key}={alpha!r} must be a number >= 0 (the Beta distribution's "
                "alpha; 0 turns it off), e.g. 0.8 for MixUp or 1.0 for CutMix."
            )
    # num_classes=None: the labels passed in are already probabilities (see mix_batch).
    ops = [
        cls(alpha=float(alphas[key]))
        for key, cls in (("mixup_alpha", v2.MixUp), ("cutmix_alpha", v2.CutMix))
        if alphas[key] > 0
    ]
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


def mix_batch(
    mixer: nn.Module,
    x: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    classes: Mapping[str, int],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mix images ``x`` and the targets of every head with one pairing and one mixing weight.

    :param mixer: From :func:`build_mix`.
    :param targets: ``{head: class indices (B,)}``.
    :param classes: ``{head: number of classes}``.
    :return: The mixed images and ``{head: class probabilities (B, classes)}``; each row sums to 1.
    """
    heads = list(classes)
    one_hot = torch.cat(
        [F.one_hot(targets[h].long(), classes[h]).to(torch.float32) for h in heads], dim=1
    )
    mixed_x, mixed = mixer(x, one_hot)
    soft = dict(zip(heads, mixed.split([classes[h] for h in heads], dim=1), strict=True))
    return mixed_x, soft
