"""Evaluate a checkpoint on the test set: ``python src/eval.py ckpt_path=...``.

torch and Lightning are imported when evaluation starts, so ``--help`` and ``--cfg job`` answer
at once.
"""

from typing import Any

import hydra
import rootutils
from omegaconf import DictConfig, open_dict

rootutils.setup_root(__file__, indicator=".project-root", pythonpath=True)

from src.utils import (  # noqa: E402
    RankedLogger,
    extras,
    freeze_imported_objects,
    report_errors,
    task_wrapper,
)
from src.utils.config_checks import check_config  # noqa: E402
from src.utils.hydra_help import speed_up_help  # noqa: E402

log = RankedLogger(__name__, rank_zero_only=True)


@task_wrapper
def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test the checkpoint ``cfg.ckpt_path`` on the datamodule's test set.

    :param cfg: The composed Hydra config (``configs/eval.yaml``).
    :return: ``(metric_dict, object_dict)``.
    """
    if not cfg.get("ckpt_path"):
        raise ValueError("Evaluation needs a checkpoint: pass ckpt_path=/path/to/file.ckpt.")
    check_config(cfg)  # checked before anything is built or imported
    from lightning import Callback, LightningDataModule, LightningModule, Trainer
    from lightning.pytorch.loggers import Logger

    from src.models.build import fit_model_config, instantiate_model
    from src.utils.checkpoints import resolve_ckpt_path
    from src.utils.checks import (
        check_model_matches_data,
        described_without_files,
        prepare_data_early,
    )
    from src.utils.instantiators import instantiate_callbacks, instantiate_loggers
    from src.utils.logging_utils import log_hyperparameters

    ckpt_path = resolve_ckpt_path(cfg)

    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    datamodule: LightningDataModule = hydra.utils.instantiate(cfg.data)

    # Data problems fail before the model and Trainer are built; a model that does not fit data
    # described by class attributes alone fails even before the data is fetched.
    check_first = described_without_files(datamodule)
    if not check_first:
        prepare_data_early(datamodule, "test")

    log.info(f"Instantiating model <{cfg.model._target_}>")
    with open_dict(cfg):  # unset shape arguments (model=timm, ...) follow the data
        cfg.model = fit_model_config(cfg.model, datamodule)
    model: LightningModule = instantiate_model(cfg.model)
    check_model_matches_data(model, datamodule)  # fail now, not mid-run
    if check_first:
        prepare_data_early(datamodule, "test")

    log.info("Instantiating callbacks...")
    callbacks: list[Callback] = instantiate_callbacks(cfg.get("callbacks"))

    log.info("Instantiating loggers...")
    logger: list[Logger] = instantiate_loggers(cfg.get("logger"))

    log.info(f"Instantiating trainer <{cfg.trainer._target_}>")
    trainer: Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=logger)

    object_dict = {
        "cfg": cfg,
        "datamodule": datamodule,
        "model": model,
        "callbacks": callbacks,
        "logger": logger,
        "trainer": trainer,
    }
    if logger:
        log.info("Logging hyperparameters!")
        log_hyperparameters(object_dict)

    log.info("Starting testing!")
    trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metric_dict = trainer.callback_metrics
    return metric_dict, object_dict


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval.yaml")
@report_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    extras(cfg)
    evaluate(cfg)


if __name__ == "__main__":
    speed_up_help()
    freeze_imported_objects()
    main()
