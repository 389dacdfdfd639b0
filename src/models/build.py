"""Build the LightningModule: from its config fitted to the data, or from a checkpoint alone.

A network config may leave its shape arguments unset (``null``): ``model=timm`` and
``model=torchvision`` do, so one config serves every dataset. :func:`fit_model_config` fills
each unset shape argument from what the datamodule says about itself, and leaves every value
the user set alone (a contradiction is then reported by
:func:`~src.utils.checks.check_model_matches_data`). :func:`instantiate_model` builds the module
from that config; :func:`load_model_from_checkpoint` rebuilds a trained one from its checkpoint.
"""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.errors import InstantiationException
from lightning import LightningModule
from omegaconf import DictConfig, OmegaConf, open_dict

from src.models.classifier_module import METADATA_KEY
from src.utils import pylogger
from src.utils.checkpoints import check_checkpoint_targets, load_checkpoint
from src.utils.data_description import describe
from src.utils.plain_data import to_plain
from src.utils.trusted_targets import check_trusted_config

log = pylogger.RankedLogger(__name__, rank_zero_only=True)

#: Keys of ``cfg.model`` holding loss configs, which the module builds itself.
LOSS_KEYS = ("criterion", "criteria")

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


def instantiate_model(model_cfg: DictConfig) -> LightningModule:
    """Instantiate the LightningModule from ``cfg.model``.

    The loss configs (``criterion``, ``criteria``) reach the module unbuilt, and the module
    builds them (:func:`~src.models.components.losses.instantiate_criterion`), rather than
    Hydra's recursive instantiation: list-valued arguments from the command line
    (``model.criterion.weight="[1,2]"``) then become tensors. An error while the module is
    built is reported as Hydra reports one (``InstantiationException``, naming the target).
    """
    losses = {key: model_cfg[key] for key in LOSS_KEYS if model_cfg.get(key)}
    rest = OmegaConf.masked_copy(model_cfg, [k for k in model_cfg if k not in losses])
    if not losses:
        model = hydra.utils.instantiate(rest)
    else:
        build = hydra.utils.instantiate(rest, _partial_=True)  # the network etc., not the module
        try:
            model = build(**losses)
        except Exception as err:
            raise InstantiationException(
                f"Error in call to target '{model_cfg._target_}':\n{err!r}"
            ) from err
    if hasattr(model, "model_config"):
        # Resolved plain config: saved in checkpoints so predict/export can rebuild the model.
        model.model_config = to_plain(model_cfg)
    return model


def _no_downloads(config: Any) -> Any:
    """Copy of a model config with every ``pretrained`` flag and starting-weights file off: the
    checkpoint has the weights, and rebuilding must never fetch anything from the network or
    need the training machine's files."""
    if isinstance(config, dict):
        # timm and torchvision spellings, and the local file of model.net.checkpoint_path
        off = {"pretrained": False, "weights": None, "checkpoint_path": None}
        return {k: off[k] if k in off else _no_downloads(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_no_downloads(v) for v in config]
    return config


def load_model_from_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[LightningModule, dict[str, Any]]:
    """Rebuild a trained module from a checkpoint alone, without the training config.

    The checkpoint must hold the ``lhte`` metadata that
    :meth:`~src.models.classifier_module.ClassifierLitModule.on_save_checkpoint` writes.

    :param path: A ``.ckpt`` file written by ``src/train.py``.
    :param map_location: Device the module is moved to.
    :return: ``(module in eval mode, metadata)``; metadata holds ``model`` (the config),
        ``heads`` ``{head: num_classes}``, ``class_names`` ``{head: [names]}``, ``normalize``
        ``{mean, std}``, ``input_shape`` ``[C, H, W]`` and ``data`` (the datamodule config).
    """
    checkpoint = load_checkpoint(path)
    check_checkpoint_targets(checkpoint, path)  # before anything is built or written
    metadata = checkpoint.get(METADATA_KEY)
    if not metadata or not metadata.get("model"):
        raise ValueError(
            f"{path} has no '{METADATA_KEY}' metadata (written before it existed, or not by "
            "src/train.py); test it with src/eval.py and its training config instead."
        )
    check_trusted_config(metadata["model"], f"The model config stored in {path}")
    model_cfg = OmegaConf.create(_no_downloads(metadata["model"]))
    if "compile" in model_cfg:
        model_cfg.compile = False  # inference runs the eager module
    module = instantiate_model(model_cfg)
    module.load_state_dict(checkpoint["state_dict"])
    module.checkpoint_metadata = metadata
    return module.to(map_location).eval(), metadata
