"""Utilities every layer stands on. Light names are imported at once; the ones that need torch
and Lightning (instantiators, hyperparameter logging) on first use, so that an entry point can
answer ``--help`` before the heavy libraries load.

``instantiate_model`` and ``load_model_from_checkpoint`` live in :mod:`src.models.build`, beside
the models they build. They stay importable from here (``from src.utils import
instantiate_model``, as in the original template) through the name map below, resolved on first
use only: this package never imports ``src.models`` itself, so it stays the ground floor."""

from importlib import import_module
from typing import Any

from src.utils.pylogger import RankedLogger
from src.utils.rich_utils import enforce_tags, print_config_tree
from src.utils.run_dir import register_run_suffix_resolver
from src.utils.utils import (
    extras,
    freeze_imported_objects,
    get_metric_value,
    report_errors,
    task_wrapper,
)

__all__ = [
    "report_errors",
    "RankedLogger",
    "enforce_tags",
    "extras",
    "freeze_imported_objects",
    "get_metric_value",
    "instantiate_callbacks",
    "instantiate_loggers",
    "instantiate_model",
    "load_model_from_checkpoint",
    "log_hyperparameters",
    "print_config_tree",
    "task_wrapper",
]

#: ``name: module`` of the names imported on first use.
_LAZY = {
    "instantiate_callbacks": "src.utils.instantiators",
    "instantiate_loggers": "src.utils.instantiators",
    "log_hyperparameters": "src.utils.logging_utils",
    # Compatibility names of the original template's API; the one reference upward, by name.
    "instantiate_model": "src.models.build",
    "load_model_from_checkpoint": "src.models.build",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'src.utils' has no attribute {name!r}")


# Every entry point imports this package before Hydra composes its config.
register_run_suffix_resolver()
