"""Pretty-print the config tree and enforce run tags."""

import sys
from collections.abc import Sequence
from pathlib import Path

import rich
import rich.syntax
import rich.tree
import yaml
from hydra.core.hydra_config import HydraConfig
from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import DictConfig, open_dict
from rich.prompt import Prompt

from src.utils import pylogger
from src.utils.secrets import collect_secrets, redact

log = pylogger.RankedLogger(__name__, rank_zero_only=True)


@rank_zero_only
def print_config_tree(
    cfg: DictConfig,
    print_order: Sequence[str] = (
        "data",
        "model",
        "callbacks",
        "logger",
        "trainer",
        "paths",
        "extras",
    ),
    resolve: bool = False,
    save_to_file: bool = False,
) -> None:
    """Print the config as a rich tree (and optionally save it to the output folder).

    :param cfg: The composed config.
    :param print_order: Groups printed first, in this order; the rest follow.
    :param resolve: Resolve interpolations before printing.
    :param save_to_file: Also write the tree to ``<output_dir>/config_tree.log``.

    Secrets (see :mod:`src.utils.secrets`) are masked in what is printed and saved.
    """
    secrets = collect_secrets(cfg)
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    queue = []
    for field in print_order:
        if field in cfg:
            queue.append(field)
        else:
            log.warning(
                f"Field '{field}' not found in config. Skipping '{field}' config printing..."
            )
    queue += [field for field in cfg if field not in queue]
    for field in queue:
        branch = tree.add(field, style="dim", guide_style="dim")
        section = cfg[field]
        plain = redact(section, secrets, resolve)
        text = (
            yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
            if isinstance(section, DictConfig)
            else str(plain)
        )
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to_file:
        with open(Path(cfg.paths.output_dir, "config_tree.log"), "w") as file:
            rich.print(tree, file=file)


@rank_zero_only
def enforce_tags(cfg: DictConfig, save_to_file: bool = False) -> None:
    """Ask for tags when none are given (only in an interactive, non-multirun session)."""
    if not cfg.get("tags"):
        if "id" in HydraConfig().cfg.hydra.job:
            raise ValueError("Specify tags before launching a multirun!")
        if not sys.stdin.isatty():  # a batch job or pipe: nobody can answer the prompt
            raise ValueError(
                f"tags={list(cfg.get('tags') or [])} is empty and there is no terminal to ask "
                "for tags. Fix: pass tags, e.g. tags='[baseline,cnn]', or turn the check off "
                "with extras.enforce_tags=false."
            )
        log.warning("No tags provided in config. Prompting user to input tags...")
        tags = Prompt.ask("Enter a list of comma separated tags", default="dev")
        tags = [t.strip() for t in tags.split(",") if t != ""]
        with open_dict(cfg):
            cfg.tags = tags
        log.info(f"Tags: {cfg.tags}")
    if save_to_file:
        with open(Path(cfg.paths.output_dir, "tags.log"), "w") as file:
            rich.print(redact(cfg.tags, collect_secrets(cfg)), file=file)
