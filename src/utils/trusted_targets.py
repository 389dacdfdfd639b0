"""Which ``_target_`` a config read from a checkpoint may build: one allow-list, checked by kind.

A checkpoint is a file from anywhere. Its stored config is only ever instantiated after
:func:`check_trusted_config` resolved every ``_target_`` to the object it names (importing
modules, never calling anything) and found that object in :data:`TRUSTED_TARGETS`. The dotted
path must walk real submodules and classes: ``src.utils.checkpoints.os.system`` reaches ``os``
through a project module and is refused before ``os.system`` is even looked at.
"""

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any


def _is_subclass(obj: Any, *bases: str) -> bool:
    """``obj`` is a class deriving from one of ``bases`` (dotted names, imported lazily)."""
    if not inspect.isclass(obj):
        return False
    for base in bases:
        module, _, name = base.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if issubclass(obj, cls):
            return True
    return False


@dataclass(frozen=True)
class TargetRule:
    """Objects defined in ``modules`` (prefixes of ``__module__``) that satisfy ``accepts``."""

    kind: str
    modules: tuple[str, ...]
    accepts: Callable[[Any], bool]


def _module_class(obj: Any) -> bool:
    return _is_subclass(obj, "torch.nn.Module")


#: Functions that build a module and touch no file or process, by full name.
TRUSTED_BUILDERS = frozenset(
    {
        "src.models.components.heads.build_head",
        "src.models.components.simple_cnn.conv_block",
        "timm.models._factory.create_model",
    }
)

#: What a checkpoint's config may build; every ``_target_`` must match one row.
TRUSTED_TARGETS: tuple[TargetRule, ...] = (
    TargetRule(
        "LightningModule of the project",
        ("src.models.",),
        lambda o: _is_subclass(o, "lightning.LightningModule"),
    ),
    TargetRule("network, head or loss of the project", ("src.models.components.",), _module_class),
    TargetRule(
        "builder function",
        ("src.models.components.", "timm."),
        lambda o: inspect.isfunction(o) and f"{o.__module__}.{o.__qualname__}" in TRUSTED_BUILDERS,
    ),
    TargetRule("torch.nn layer or loss", ("torch.nn.",), _module_class),
    TargetRule("timm model", ("timm.",), _module_class),
    TargetRule("torchvision model", ("torchvision.models.",), _module_class),
    TargetRule("optimizer", ("torch.optim.",), lambda o: _is_subclass(o, "torch.optim.Optimizer")),
    TargetRule(
        "learning-rate scheduler",
        ("torch.optim.", "src.models.components."),
        lambda o: _is_subclass(
            o, "torch.optim.lr_scheduler.LRScheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau"
        ),
    ),
    TargetRule(
        "LightningDataModule of the project",
        ("src.data.",),
        lambda o: _is_subclass(o, "lightning.LightningDataModule"),
    ),
)


#: Package prefixes a target path may start with (checked before anything is imported).
TRUSTED_PACKAGES = tuple(sorted({m for rule in TRUSTED_TARGETS for m in rule.modules}))


class UntrustedTargetError(ValueError):
    """A checkpoint's config names a ``_target_`` outside :data:`TRUSTED_TARGETS`."""


def resolve_target(path: str) -> Any:
    """The object ``path`` names, reached only through real submodules and classes.

    :raises ValueError: When the path leaves its package (``pkg.mod.os``), names a function
        or value along the way, or does not exist.
    """
    parts = path.split(".")
    if not all(p.isidentifier() for p in parts):
        raise ValueError("is not a dotted Python name")
    # Importing runs a module's top level: only packages the table allows are ever imported.
    if not path.startswith(TRUSTED_PACKAGES):
        raise ValueError(f"lies outside the allowed packages {list(TRUSTED_PACKAGES)}")
    obj: Any = importlib.import_module(parts[0])
    dotted = parts[0]
    for part in parts[1:]:
        dotted = f"{dotted}.{part}"
        if isinstance(obj, ModuleType):
            try:
                obj = importlib.import_module(dotted)
                continue
            except ModuleNotFoundError:
                pass  # not a submodule: an attribute of the module
        elif not inspect.isclass(obj):
            raise ValueError(f"walks through {type(obj).__name__} {dotted.rpartition('.')[0]}")
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"does not exist ({dotted} is missing)") from None
        if isinstance(obj, ModuleType) and obj.__name__ != dotted:
            raise ValueError(f"reaches module {obj.__name__!r} through {dotted}")
    return obj


def trusted_kind(path: str) -> str:
    """The :data:`TRUSTED_TARGETS` kind of the object ``path`` names.

    :raises ValueError: When the path is unsafe to walk or the object is not allowed.
    """
    obj = resolve_target(path)
    module = getattr(obj, "__module__", None) or ""
    for rule in TRUSTED_TARGETS:
        if module.startswith(rule.modules) and rule.accepts(obj):
            return rule.kind
    what = "class" if inspect.isclass(obj) else type(obj).__name__
    raise ValueError(f"is a {what} from {module or 'nowhere'}, not an allowed kind")


def check_trusted_config(config: Any, where: str, key: str = "") -> None:
    """Raise :class:`UntrustedTargetError` unless every ``_target_`` in ``config`` is trusted.

    :param config: Plain data (dicts, lists, scalars) read from a checkpoint.
    :param where: Names the source in the error, e.g. ``"The model config stored in x.ckpt"``.
    :param key: Key path of ``config`` itself, for the error message.
    """
    allowed = sorted({r.kind for r in TRUSTED_TARGETS})
    if isinstance(config, dict):
        if "_target_" in config:
            target = config["_target_"]
            at = f"{key}._target_" if key else "_target_"
            if not isinstance(target, str):
                raise UntrustedTargetError(
                    f"{where}: {at} is {type(target).__name__} {target!r}, not a dotted class "
                    "name; refusing to build it."
                )
            try:
                trusted_kind(target)
            except (ImportError, ValueError) as err:
                raise UntrustedTargetError(
                    f"{where}: {at}={target!r} {err}; a checkpoint may only build {allowed}. "
                    "Refusing to load it: rebuild the model from a trusted config instead."
                ) from None
        for name, value in config.items():
            check_trusted_config(value, where, f"{key}.{name}" if key else str(name))
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            check_trusted_config(value, where, f"{key}[{i}]")
