"""Train a model from the Hydra config: ``python src/train.py [overrides]``.

torch, Lightning and the models are imported when training starts, not when this module is
imported: ``--help``, ``--cfg job``, ``--info`` and a mistyped config name answer at once.
"""

from typing import Any

import hydra
import rootutils
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

rootutils.setup_root(__file__, indicator=".project-root", pythonpath=True)
# setup_root: finds the folder with ".project-root", adds it to PYTHONPATH (so `src` imports work
# from anywhere), sets PROJECT_ROOT (used by configs/paths) and loads a `.env` file if present.

from src.utils import (  # noqa: E402
    RankedLogger,
    extras,
    freeze_imported_objects,
    get_metric_value,
    report_errors,
    task_wrapper,
)
from src.utils.config_checks import check_config  # noqa: E402
from src.utils.ddp_trials import needs_trial_ranks, trial_ranks  # noqa: E402
from src.utils.hydra_help import speed_up_help  # noqa: E402

log = RankedLogger(__name__, rank_zero_only=True)


@task_wrapper
def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the model, then test it with the best checkpoint.

    :param cfg: The composed Hydra config.
    :return: ``(metric_dict, object_dict)``: metrics from fit and test, and the objects built.
    """
    # Checked before anything is built: a bad value fails in a second, not after data loading.
    check_config(cfg)
    from src.utils.checkpoints import resolve_ckpt_path

    ckpt_path = resolve_ckpt_path(cfg, resume=bool(cfg.get("train")))
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        if needs_trial_ranks(cfg.trainer, multirun, str(hydra_cfg.launcher.get("_target_", ""))):
            with trial_ranks(cfg.trainer, __file__):  # a DDP trial of a local sweep
                return fit_and_test(cfg, ckpt_path)
    return fit_and_test(cfg, ckpt_path)


def fit_and_test(cfg: DictConfig, ckpt_path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build everything from ``cfg``, fit (from ``ckpt_path`` if given), then test."""
    import lightning as L
    import torch

    from src.run_setup import build_run
    from src.utils.pylogger import log_lightning_once

    log_lightning_once()

    torch.set_float32_matmul_precision("high")
    if cfg.get("seed") is not None:  # seed 0 is a valid seed
        L.seed_everything(cfg.seed, workers=True)

    object_dict = build_run(cfg, "fit")
    datamodule, model, trainer = (object_dict[k] for k in ("datamodule", "model", "trainer"))

    if cfg.get("train"):
        log.info("Starting training!")
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    train_metrics = trainer.callback_metrics

    if cfg.get("test"):
        log.info("Starting testing!")
        ckpt_path = (
            trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        )
        if ckpt_path == "":
            log.warning("Best ckpt not found! Using current weights for testing...")
            ckpt_path = None
        trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        log.info(f"Best ckpt path: {ckpt_path}")
    test_metrics = trainer.callback_metrics

    metric_dict = {**train_metrics, **test_metrics}
    return metric_dict, object_dict


@hydra.main(version_base="1.3", config_path="../configs", config_name="train.yaml")
@report_errors
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the value of ``optimized_metric`` for sweepers."""
    check_config(cfg)  # first: a bad value is then all the output shows, not the config tree
    extras(cfg)
    metric_dict, _ = train(cfg)
    return get_metric_value(metric_dict=metric_dict, metric_name=cfg.get("optimized_metric"))


if __name__ == "__main__":
    speed_up_help()
    freeze_imported_objects()
    main()
