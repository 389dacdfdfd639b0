"""Fit a model config to the data it will train on.

A network config may leave its shape arguments unset (``null``): ``model=timm`` and
``model=torchvision`` do, so one config serves every dataset. :func:`fit_model_config` fills
each unset shape argument from what the datamodule says about itself, and leaves every value
the user set alone (a contradiction is then reported by
:func:`~src.utils.checks.check_model_matches_data`).
"""

from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from src.utils import pylogger
from src.utils.data_description import describe

log = pylogger.RankedLogger(__name__, rank_zero_only=True)

Shape = tuple[int, int, int]
Heads = Mapping[str, int]

#: Shape arguments a network may take, and how each follows from ``(C, H, W)`` and the heads.
#: The project's families and the library wrappers all use these names.
SHAPE_RULES: dict[str, Callable[[Shape, Heads], Any]] = {
    "in_channels": lambda shape, heads: shape[0],
    "image_size": lambda shape, heads: shape[1] if shape[1] == shape[2] else [shape[1], shape[2]],
    "input_size": lambda shape, heads: shape[0] * shape[1] * shape[2],  # SimpleDenseNet
    "num_classes": lambda shape, heads: next(iter(heads.values())) if len(heads) == 1 else None,
    "output_size": lambda shape, heads: next(iter(heads.values())) if len(heads) == 1 else None,
    "heads_config": lambda shape, heads: dict(heads) if len(heads) > 1 else None,
}


def fit_model_config(model_cfg: DictConfig, datamodule: Any) -> DictConfig:
    """A copy of ``model_cfg`` whose unset (``null``) network shape arguments come from the data.

    :param model_cfg: The ``model`` config (its ``net`` node holds the network's arguments).
    :param datamodule: Any datamodule; its :func:`~src.utils.data_description.describe`
        gives the input shape ``(C, H, W)`` and the heads ``{head: classes}``.
    :return: The filled copy; ``model_cfg`` itself is not changed.
    """
    fitted = model_cfg.copy()
    net = fitted.get("net")
    description = describe(datamodule)
    shape, heads = description.input_shape, description.heads
    if not isinstance(net, DictConfig) or len(shape) != 3 or not heads:
        return fitted
    filled = {}
    for key, rule in SHAPE_RULES.items():
        if key not in net or OmegaConf.is_missing(net, key) or net[key] is not None:
            continue
        if key in ("image_size", "input_size") and 0 in shape:
            continue  # size known only after the images are read (image folders)
        value = rule(shape, heads)
        if value is not None:
            filled[key] = value
    if filled:
        with open_dict(net):
            for key, value in filled.items():
                net[key] = value
        log.info(
            "Fitted the network to the data: "
            + ", ".join(f"model.net.{k}={v}" for k, v in filled.items())
        )
    return fitted
