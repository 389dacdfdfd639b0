"""Task wrapper, optional extras and metric lookup, as in the original template."""

import functools
import gc
import os
import signal
import sys
import warnings
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.utils import pylogger, rich_utils
from src.utils.provenance import finish_run_info, mask_run_secrets, write_run_info

log = pylogger.RankedLogger(__name__, rank_zero_only=True)

#: Set to 1 for full tracebacks (Hydra's own switch, reused so there is one to remember).
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"


def full_errors() -> bool:
    """Whether errors are shown with their full traceback (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get(FULL_ERROR_ENV) == "1"


def log_error(ex: BaseException) -> None:
    """Log ``ex`` once: its message, or with ``HYDRA_FULL_ERROR=1`` its whole traceback."""
    if getattr(ex, "_lhte_logged", False):
        return
    if full_errors():
        log.exception("")
    else:
        log.error(f"{type(ex).__name__}: {ex}\n(Full traceback: rerun with {FULL_ERROR_ENV}=1.)")
    try:
        ex._lhte_logged = True  # type: ignore[attr-defined]
    except AttributeError:  # some built-in exceptions take no attributes
        pass


def report_errors(main_func: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Decorate an entry point's ``main``: an error is printed once, as one short message, and
    the process exits with status 1. ``HYDRA_FULL_ERROR=1`` keeps Hydra's full traceback; in a
    multirun the error goes back to the launcher/sweeper, which records the failed job."""

    @functools.wraps(main_func)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return main_func(cfg)
        except Exception as ex:
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
            if multirun or full_errors():
                raise
            log_error(ex)
            raise SystemExit(1) from None

    return wrapper


def extras(cfg: DictConfig) -> None:
    """Apply optional utilities before the task starts (ignore warnings, tags, config tree)."""
    if not cfg.get("extras"):
        log.warning("Extras config not found! <cfg.extras=null>")
        return
    if cfg.extras.get("ignore_warnings"):
        log.info("Disabling python warnings! <cfg.extras.ignore_warnings=True>")
        warnings.filterwarnings("ignore")
    if cfg.extras.get("enforce_tags"):
        log.info("Enforcing tags! <cfg.extras.enforce_tags=True>")
        rich_utils.enforce_tags(cfg, save_to_file=True)
    if cfg.extras.get("print_config"):
        log.info("Printing config tree with Rich! <cfg.extras.print_config=True>")
        rich_utils.print_config_tree(cfg, resolve=True, save_to_file=True)


class RunInterrupted(SystemExit):
    """A run stopped by a signal after saving a resumable checkpoint.

    A ``SystemExit`` whose exit code is ``128 + signum`` (130 for SIGINT, 143 for SIGTERM), so
    shells and schedulers see the usual code and Lightning still runs its cleanup.
    """

    def __init__(self, signum: int, ckpt_path: Any) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.ckpt_path = ckpt_path

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        return (
            f"Interrupted by {name}; checkpoint of the current step: {self.ckpt_path}. "
            f"Resume with ckpt_path={self.ckpt_path} (or ckpt_path=last)."
        )


def _wants_run_info(cfg: DictConfig) -> bool:
    extras_cfg = cfg.get("extras")
    return extras_cfg is None or bool(extras_cfg.get("run_info", True))


def task_wrapper(task_func: Callable) -> Callable:
    """Wrap a task so failures are logged and loggers are closed, even on exceptions.

    The wrapped task returns ``(metric_dict, object_dict)``; an exception is re-raised after
    the output folder is reported and wandb (if used) is finished. Unless
    ``extras.run_info=false``, ``run_info.yaml`` (provenance, :mod:`src.utils.provenance`)
    is written when the task starts and completed with its status and metrics when it ends
    (``finished``, ``failed``, ``pruned``, or ``interrupted`` after :class:`RunInterrupted`).
    """

    def wrap(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
        run_info = _wants_run_info(cfg)
        mask_run_secrets(cfg)
        if run_info:
            write_run_info(cfg)
        try:
            metric_dict, object_dict = task_func(cfg=cfg)
        except RunInterrupted as ex:
            if run_info:
                finish_run_info(cfg, "interrupted", error=str(ex))
            log.warning(str(ex))
            raise
        except BaseException as ex:
            pruned = type(ex).__name__ == "TrialPruned"  # an Optuna decision, not a failure
            if pruned:
                log.info(f"Trial pruned: {ex}")
            elif isinstance(ex, Exception):
                log_error(ex)
            if run_info:
                status = "pruned" if pruned else "failed"
                finish_run_info(cfg, status, error=f"{type(ex).__name__}: {ex}")
            raise ex
        else:
            if run_info:
                finish_run_info(cfg, "finished", metric_dict)
        finally:
            log.info(f"Output dir: {cfg.paths.output_dir}")
            wandb = sys.modules.get("wandb")  # never imported: no run to close (and 0.8 s saved)
            if wandb is not None and wandb.run:
                log.info("Closing wandb!")
                wandb.finish()
        return metric_dict, object_dict

    return wrap


def get_metric_value(metric_dict: dict[str, Any], metric_name: str | None) -> float | None:
    """Return ``metric_dict[metric_name]`` as a float (for hyperparameter sweeps)."""
    if not metric_name:
        log.info("Metric name is None! Skipping metric value retrieval...")
        return None
    if metric_name not in metric_dict:
        raise Exception(
            f"Metric value not found! <metric_name={metric_name}>\n"
            "Make sure metric name logged in LightningModule is correct!\n"
            "Make sure `optimized_metric` name in `hparams_search` config is correct!"
        )
    metric_value = metric_dict[metric_name].item()
    log.info(f"Retrieved metric value! <{metric_name}={metric_value}>")
    return metric_value


def freeze_imported_objects() -> None:
    """Exempt everything created so far (mostly the imported libraries) from garbage collection.

    torch, Lightning, torchmetrics and their dependencies leave about a million long-lived
    objects; without this the cyclic collector rescans them during the run and once more at
    interpreter exit, which costs 1.5-2 s per process on a small CPU. Call it once, after the
    imports, at the start of a command-line entry point.
    """
    global _FROZE_AT_START
    gc.freeze()
    _FROZE_AT_START = True


_FROZE_AT_START = False  # set by the entry points; library callers (tests, notebooks) never freeze


def freeze_late_imports() -> None:
    """Freeze again after the libraries an entry point imports only when its task starts.

    The entry points import torch and Lightning lazily (so ``--help`` answers at once), which is
    after their first :func:`freeze_imported_objects`; without a second freeze those objects
    would be rescanned during the run and at exit. Does nothing in processes that did not
    freeze at start, so in-process callers keep a normal garbage collector.
    """
    if _FROZE_AT_START:
        gc.freeze()


def require_values(cfg: DictConfig, hints: dict[str, str]) -> None:
    """Raise one short error for each mandatory key (``???`` in the config) left unset.

    :param cfg: The task config.
    :param hints: ``{key: example value}``; the example goes into the message.
    :raises ValueError: Naming every missing key with an example of how to set it.
    """
    missing = [key for key in hints if OmegaConf.is_missing(cfg, key) or cfg.get(key) is None]
    if missing:
        fixes = " ".join(f"{key}={hints[key]}" for key in missing)
        raise ValueError(f"{', '.join(missing)} must be set. Fix: add {fixes} to the command.")
