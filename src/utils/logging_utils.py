"""Send the run's hyperparameters to every logger."""

from typing import Any

from lightning_utilities.core.rank_zero import rank_zero_only

from src.utils import pylogger
from src.utils.plain_data import to_plain
from src.utils.secrets import collect_secrets, redact

log = pylogger.RankedLogger(__name__, rank_zero_only=True)


@rank_zero_only
def log_hyperparameters(object_dict: dict[str, Any]) -> None:
    """Log the resolved config and parameter counts to all loggers, secrets masked.

    :param object_dict: ``cfg``, ``model`` and ``trainer`` of the run.
    """
    cfg = object_dict["cfg"]
    model = object_dict["model"]
    trainer = object_dict["trainer"]
    if not trainer.logger:
        log.warning("Logger not found! Skipping hyperparameter logging...")
        return
    hparams: dict[str, Any] = {
        "model": to_plain(cfg.model),
        "model/params/total": sum(p.numel() for p in model.parameters()),
        "model/params/trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "model/params/non_trainable": sum(
            p.numel() for p in model.parameters() if not p.requires_grad
        ),
    }
    for key in ("data", "trainer", "callbacks", "extras", "task_name", "tags", "ckpt_path", "seed"):
        hparams[key] = to_plain(cfg.get(key))
    hparams = redact(hparams, collect_secrets(cfg))
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)
