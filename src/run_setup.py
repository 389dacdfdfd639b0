"""The objects of one run, built from its config in the order that fails earliest.

``src/train.py`` and ``src/eval.py`` share it: the config is checked before this is called,
then the data is fetched, decoded and split before the model and the Trainer are built, so a
bad dataset or a model that does not fit it stops the run before any training starts.
"""

from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

from src.utils import RankedLogger

log = RankedLogger(__name__, rank_zero_only=True)


def build_run(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """Build the datamodule, model, callbacks, loggers and Trainer of ``cfg``.

    :param cfg: The composed, checked config; its ``model`` node gets the shape arguments the
        data fills in (``model=timm`` and friends leave them unset).
    :param stage: ``"fit"`` or ``"test"``: which splits are prepared before the model is built.
    :return: ``{cfg, datamodule, model, callbacks, logger, trainer}``, hyperparameters logged.
    """
    from src.models.build import fit_model_config, instantiate_model
    from src.utils.checks import (
        check_model_matches_data,
        described_without_files,
        prepare_data_early,
    )
    from src.utils.instantiators import instantiate_callbacks, instantiate_loggers
    from src.utils.logging_utils import log_hyperparameters
    from src.utils.utils import freeze_late_imports

    freeze_late_imports()  # torch, Lightning and the models are imported by now

    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    datamodule = hydra.utils.instantiate(cfg.data)

    # A model that does not fit data described by class attributes alone fails even before
    # the data is fetched; otherwise the data comes first.
    check_first = described_without_files(datamodule)
    if not check_first:
        prepare_data_early(datamodule, stage)

    log.info(f"Instantiating model <{cfg.model._target_}>")
    with open_dict(cfg):
        cfg.model = fit_model_config(cfg.model, datamodule)
    model = instantiate_model(cfg.model)
    check_model_matches_data(model, datamodule)
    if check_first:
        prepare_data_early(datamodule, stage)

    log.info("Instantiating callbacks...")
    callbacks = instantiate_callbacks(cfg.get("callbacks"))

    log.info("Instantiating loggers...")
    logger = instantiate_loggers(cfg.get("logger"))

    log.info(f"Instantiating trainer <{cfg.trainer._target_}>")
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=logger)

    objects = {
        "cfg": cfg,
        "datamodule": datamodule,
        "model": model,
        "callbacks": callbacks,
        "logger": logger,
        "trainer": trainer,
    }
    if logger:
        log.info("Logging hyperparameters!")
        log_hyperparameters(objects)
    return objects
