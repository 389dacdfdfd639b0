"""Evaluate a checkpoint on the test set: ``python src/eval.py ckpt_path=...``.

torch and Lightning are imported when evaluation starts, so ``--help`` and ``--cfg job`` answer
at once.
"""

from typing import Any

import hydra
import rootutils
from omegaconf import DictConfig

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
from src.utils.utils import require_values  # noqa: E402

log = RankedLogger(__name__, rank_zero_only=True)

#: The key evaluation needs, with an example for the error that names it.
REQUIRED = {"ckpt_path": "<run>/checkpoints/last.ckpt (or ckpt_path=last)"}


@task_wrapper
def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test the checkpoint ``cfg.ckpt_path`` on the datamodule's test set.

    :param cfg: The composed Hydra config (``configs/eval.yaml``).
    :return: ``(metric_dict, object_dict)``.
    """
    require_values(cfg, REQUIRED)
    check_config(cfg)  # checked before anything is built or imported
    from src.run_setup import build_run
    from src.utils.checkpoints import resolve_ckpt_path
    from src.utils.pylogger import log_lightning_once

    log_lightning_once()

    ckpt_path = resolve_ckpt_path(cfg)
    object_dict = build_run(cfg, "test")
    datamodule, model, trainer = (object_dict[k] for k in ("datamodule", "model", "trainer"))

    log.info("Starting testing!")
    trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metric_dict = trainer.callback_metrics
    return metric_dict, object_dict


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval.yaml")
@report_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    require_values(cfg, REQUIRED)  # first: the config tree cannot show a missing value
    check_config(cfg)  # and a bad value is then all the output shows
    extras(cfg)
    evaluate(cfg)


if __name__ == "__main__":
    speed_up_help()
    freeze_imported_objects()
    main()
