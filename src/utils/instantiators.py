"""Build the callbacks and loggers from their configs.

The model is built beside the models, by :mod:`src.models.build`.
"""

import hydra
from lightning import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

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
