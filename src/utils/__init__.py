from src.utils.instantiators import instantiate_callbacks, instantiate_loggers, instantiate_model
from src.utils.logging_utils import log_hyperparameters
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
    "log_hyperparameters",
    "print_config_tree",
    "task_wrapper",
]

# Every entry point imports this package before Hydra composes its config.
register_run_suffix_resolver()
