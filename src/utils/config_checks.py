"""Type and range checks of the keys users change most, before anything is loaded or built.

A wrong value (``data.batch_size=abc``, ``model.optimizer.lr=-1``, ``seed=abc``) otherwise fails
deep inside a library, after the data is read and the model summary printed, with a message
that does not name the key. Each check here raises one :class:`ConfigValueError` naming the
key, the value and what to write instead. Optimizer and scheduler keys are also compared with
their class's arguments, so ``+model.optimizer.learning_rate=0.1`` gets "did you mean lr?".
"""

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf


class ConfigValueError(ValueError):
    """A config value has the wrong type or range."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: ``key: (accepts the value, what the key wants, example)``; a missing key is not checked.
CHECKS: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "data.batch_size": (lambda v: _is_int(v) and v > 0, "a positive integer", "128"),
    "data.num_workers": (lambda v: _is_int(v) and v >= 0, "an integer >= 0", "4"),
    "seed": (lambda v: v is None or _is_int(v), "an integer or null", "12345"),
    "model.optimizer.lr": (lambda v: _is_number(v) and v >= 0, "a number >= 0", "0.001"),
    "model.optimizer.weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0", "0.0"),
    "trainer.max_epochs": (
        lambda v: v is None or (_is_int(v) and v >= -1),
        "a positive integer (-1: no limit)",
        "10",
    ),
    "trainer.min_epochs": (lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0", "1"),
    "trainer.max_steps": (lambda v: _is_int(v) and v >= -1, "an integer (-1: no limit)", "1000"),
    "trainer.devices": (
        lambda v: (
            v == "auto"
            or (_is_int(v) and (v > 0 or v == -1))
            or (isinstance(v, list | tuple) and all(_is_int(d) and d >= 0 for d in v))
            or (isinstance(v, str) and v.strip().lstrip("-").isdigit())
        ),
        "a device count, -1 (all), a list of device ids or auto",
        "1",
    ),
    "trainer.accumulate_grad_batches": (lambda v: _is_int(v) and v > 0, "a positive integer", "2"),
}


def check_config(cfg: DictConfig) -> None:
    """Check the common keys of ``cfg`` and the optimizer/scheduler arguments.

    :raises ConfigValueError: For the first bad value, naming the key, the value and a fix.
    """
    for key, (valid, wanted, example) in CHECKS.items():
        value = OmegaConf.select(cfg, key, default="__absent__", throw_on_missing=False)
        if isinstance(value, str) and value == "__absent__":
            continue
        if not valid(value):
            raise ConfigValueError(
                f"{key}={value!r} is not valid: it must be {wanted}, e.g. {key}={example}."
            )
    for key in ("model.optimizer", "model.scheduler"):
        node = OmegaConf.select(cfg, key, default=None)
        if isinstance(node, DictConfig):
            check_arguments(node, key)


def check_arguments(node: DictConfig, key: str) -> None:
    """Every key of a ``_target_`` node must be an argument of its target, or a did-you-mean.

    Targets that take ``**kwargs`` (or cannot be found) are left to Hydra.
    """
    target = node.get("_target_")
    if not isinstance(target, str):
        return
    try:
        from hydra.utils import get_object

        obj = get_object(target)
        parameters = inspect.signature(obj).parameters
    except Exception:  # an unknown target is reported when it is instantiated
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    known = [name for name in parameters if name not in ("self", "params", "optimizer")]
    for name in node:
        if str(name).startswith("_") or name in parameters:
            continue
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
        if not close and str(name) in ALIASES:
            close = [ALIASES[str(name)]]
        hint = f"did you mean {key}.{close[0]}? " if close else ""
        raise ConfigValueError(
            f"{key}.{name} is not an argument of {target}: {hint}Its arguments are "
            f"{', '.join(known)}."
        )


#: Names people write for arguments that torch spells otherwise.
ALIASES = {"learning_rate": "lr", "wd": "weight_decay", "beta1": "betas", "beta2": "betas"}
