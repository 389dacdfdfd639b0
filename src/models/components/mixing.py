"""MixUp and CutMix of training batches (``model.mix``), built on torchvision v2.

``v2.MixUp``/``v2.CutMix`` mix each image with its neighbour in the (shuffled) batch and turn its
label into class probabilities. With several heads, every head's one-hot targets are mixed in the
same call, concatenated into one probability tensor, so all heads share the pairing and the
mixing weight. The random draws (mixing weight, CutMix box, MixUp-or-CutMix choice) come from the
global torch RNG, which the checkpoint saves, so mixed runs resume exactly.
"""

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

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
