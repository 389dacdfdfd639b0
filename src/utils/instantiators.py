"""Build callbacks, loggers and the model from their configs, or the model from a checkpoint."""

from pathlib import Path
from typing import Any

import hydra
import torch
from lightning import Callback, LightningModule
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from src.models.components.losses import instantiate_criterion
from src.utils import pylogger
from src.utils.checkpoints import check_checkpoint_targets, load_checkpoint
from src.utils.plain_data import to_plain
from src.utils.trusted_targets import check_trusted_config

log = pylogger.RankedLogger(__name__, rank_zero_only=True)


def _instantiate_group(cfg: DictConfig | None, what: str) -> list:
    objects: list = []
    if not cfg:
        log.warning(f"No {what} configs found! Skipping...")
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"{what.capitalize()} config must be a DictConfig!")
    for _, conf in cfg.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.info(f"Instantiating {what[:-1]} <{conf._target_}>")
            objects.append(hydra.utils.instantiate(conf))
    return objects


def instantiate_callbacks(callbacks_cfg: DictConfig) -> list[Callback]:
    """Instantiate every callback under ``callbacks:`` that has a ``_target_``."""
    return _instantiate_group(callbacks_cfg, "callbacks")


def instantiate_loggers(logger_cfg: DictConfig) -> list[Logger]:
    """Instantiate every logger under ``logger:`` that has a ``_target_``."""
    return _instantiate_group(logger_cfg, "loggers")


def instantiate_model(model_cfg: DictConfig) -> LightningModule:
    """Instantiate the LightningModule, building its loss(es) with :func:`instantiate_criterion`.

    Losses are built here rather than by Hydra's recursive instantiation so that list-valued
    arguments from the command line (``model.criterion.weight="[1,2]"``) become tensors.
    """
    losses = {}
    if model_cfg.get("criterion") is not None:
        losses["criterion"] = instantiate_criterion(model_cfg.criterion)
    if model_cfg.get("criteria"):
        losses["criteria"] = {h: instantiate_criterion(c) for h, c in model_cfg.criteria.items()}
    rest = OmegaConf.masked_copy(model_cfg, [k for k in model_cfg if k not in losses])
    model = hydra.utils.instantiate(rest, **losses)
    if hasattr(model, "model_config"):
        # Resolved plain config: saved in checkpoints so predict/export can rebuild the model.
        model.model_config = to_plain(model_cfg)
    return model


def check_trusted_targets(config: Any, where: str) -> None:
    """Raise unless every ``_target_`` in ``config`` is in the checkpoint allow-list
    (:data:`src.utils.trusted_targets.TRUSTED_TARGETS`); nothing is instantiated to check."""
    check_trusted_config(config, where)


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
    from src.models.classifier_module import METADATA_KEY  # here: models import utils

    checkpoint = load_checkpoint(path)
    check_checkpoint_targets(checkpoint, path)  # before anything is built or written
    metadata = checkpoint.get(METADATA_KEY)
    if not metadata or not metadata.get("model"):
        raise ValueError(
            f"{path} has no '{METADATA_KEY}' metadata (written before it existed, or not by "
            "src/train.py); test it with src/eval.py and its training config instead."
        )
    check_trusted_targets(metadata["model"], f"The model config stored in {path}")
    model_cfg = OmegaConf.create(_no_downloads(metadata["model"]))
    if "compile" in model_cfg:
        model_cfg.compile = False  # inference runs the eager module
    module = instantiate_model(model_cfg)
    module.load_state_dict(checkpoint["state_dict"])
    module.checkpoint_metadata = metadata
    return module.to(map_location).eval(), metadata
