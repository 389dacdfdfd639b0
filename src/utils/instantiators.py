"""Build callbacks, loggers and the model from their configs."""

import hydra
from lightning import Callback, LightningModule
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from src.models.components.losses import instantiate_criterion
from src.utils import pylogger

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
    return model
