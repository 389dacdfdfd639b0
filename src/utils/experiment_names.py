"""Experiment names: the configs that hold a recipe, and the old names kept as aliases.

An old name stays usable as a config that only composes its new name, so a run started under
either name is the same experiment (``ckpt_path=last`` finds it under both).
"""

from functools import cache
from pathlib import Path

from omegaconf import OmegaConf

EXPERIMENT_DIR = Path(__file__).resolve().parents[2] / "configs" / "experiment"


def alias_target(path: Path) -> str | None:
    """The experiment an alias config stands for, or None when ``path`` holds a recipe itself.

    An alias is a config whose only content is ``defaults: [<experiment>, _self_]``.
    """
    cfg = OmegaConf.load(path)
    if set(cfg.keys()) != {"defaults"}:
        return None
    names = [d for d in cfg.defaults if d != "_self_"]
    if (
        len(names) == 1
        and isinstance(names[0], str)
        and (EXPERIMENT_DIR / f"{names[0]}.yaml").is_file()
    ):
        return names[0]
    return None


@cache
def experiment_aliases() -> dict[str, str]:
    """``{old name: new name}`` of every alias config in ``configs/experiment``."""
    found = {p.stem: alias_target(p) for p in sorted(EXPERIMENT_DIR.glob("*.yaml"))}
    return {old: new for old, new in found.items() if new is not None}  # callers must not edit it


def canonical_experiments() -> list[str]:
    """Every experiment config that is not an alias, sorted."""
    aliases = experiment_aliases()
    return sorted(p.stem for p in EXPERIMENT_DIR.glob("*.yaml") if p.stem not in aliases)


def canonical_name(experiment: str | None) -> str | None:
    """The name ``experiment`` is an alias of, or ``experiment`` itself."""
    return experiment_aliases().get(experiment, experiment) if experiment else experiment
