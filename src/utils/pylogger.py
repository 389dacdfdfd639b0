"""A logger that prefixes the process rank and can log from rank zero only."""

import logging
import os
from collections.abc import Mapping

from lightning_utilities.core.rank_zero import rank_prefixed_message, rank_zero_only

#: Where launchers put the process rank, in the order Lightning reads them.
RANK_VARS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
if getattr(rank_zero_only, "rank", None) is None:
    # Lightning sets the rank when it is imported, and keeps a value that is already there; the
    # entry points log before they import it.
    rank_zero_only.rank = next((int(os.environ[v]) for v in RANK_VARS if v in os.environ), 0)


class RankedLogger(logging.LoggerAdapter):
    """Multi-GPU-friendly python logger.

    :param name: Logger name.
    :param rank_zero_only: Log only on rank zero by default.
    :param extra: Extra context for ``LoggerAdapter``.
    """

    def __init__(
        self,
        name: str = __name__,
        rank_zero_only: bool = False,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(logger=logging.getLogger(name), extra=extra)
        self.rank_zero_only = rank_zero_only

    def log(self, level: int, msg: str, rank: int | None = None, *args, **kwargs) -> None:
        """Log ``msg`` with the rank prefixed; ``rank`` restricts it to one process."""
        if not self.isEnabledFor(level):
            return
        msg, kwargs = self.process(msg, kwargs)
        current_rank = getattr(rank_zero_only, "rank", None)
        if current_rank is None:
            raise RuntimeError("The `rank_zero_only.rank` needs to be set before use")
        msg = rank_prefixed_message(msg, current_rank)
        if self.rank_zero_only:
            if current_rank == 0:
                self.logger.log(level, msg, *args, **kwargs)
        elif rank is None or current_rank == rank:
            self.logger.log(level, msg, *args, **kwargs)


def log_lightning_once() -> None:
    """Print each Lightning message once, through the handlers Hydra set up.

    ``import lightning`` gives the package logger a console handler of its own. Imported after
    Hydra has configured the root logger (train and eval import it when the task starts), its
    loggers also propagate to the root, so every message would be printed twice; then
    Lightning's own handler is dropped, and its messages also reach the run's log file.
    """
    import lightning

    package_logger = logging.getLogger("lightning")
    console = getattr(lightning, "_console", None)
    if logging.getLogger().hasHandlers() and console in package_logger.handlers:
        package_logger.removeHandler(console)
