"""Every ``python src/<entry>.py ...`` command in the README, the docs and the config headers
composes and passes the config checks: its config names, keys and values exist, so a command
copied from the docs starts."""

import re
import shlex

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from src.utils.config_checks import check_config
from tests.conftest import ROOT, compose_config

#: The entry point and its words, up to a comment, a table cell, a backtick or "(" prose.
COMMAND = re.compile(r"python src/(train|eval|predict|export)\.py((?: +[^ `\n|#(][^ `\n|]*)*)")
#: A value the reader fills in (``ckpt_path=<file.ckpt>``): composed with a stand-in, as
#: composing reads no file.
PLACEHOLDER = re.compile(r"<[^>]*>")
#: What only shows a command's form (``model=...``, ``$VAR``, a sentence in angle brackets).
FORM_ONLY = re.compile(r"\.\.\.|\$|<[^>]* [^>]*>")
GROUPS = {str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*") if p.is_dir()}


def documented_commands() -> list[tuple[str, str, tuple[str, ...], bool]]:
    """``(where, entry point, overrides, whether a placeholder was filled in)`` of every
    runnable documented command."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted((ROOT / "configs").rglob("*.yaml"))
    found = {}
    for file in files:
        for number, line in enumerate(file.read_text().splitlines(), 1):
            for match in COMMAND.finditer(line):
                text = match.group(2).strip().rstrip("\\").strip()
                if FORM_ONLY.search(text):
                    continue
                try:
                    words = shlex.split(text)
                except ValueError:  # an unbalanced quote: the command goes on in prose
                    continue
                if not all("=" in w or w.startswith("-") for w in words):
                    continue  # prose after the command
                if any(PLACEHOLDER.search(w) and w.split("=")[0] in GROUPS for w in words):
                    continue  # model=<family>: a config name to choose
                filled = [PLACEHOLDER.sub("x", w) for w in words]
                key = (match.group(1), tuple(filled), filled != words)
                found.setdefault(key, f"{file.relative_to(ROOT)}:{number}")
    return [(where, *key) for key, where in found.items()]


COMMANDS = documented_commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) > 30


@pytest.mark.parametrize(
    "entry, overrides, filled", [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS]
)
def test_documented_command_composes(entry: str, overrides: tuple[str, ...], filled: bool) -> None:
    """Flags (``-m``, ``--help``) are dropped; a sweep override (``a=1,2``) is composed with
    its first value, as the first job of the multirun would be. Values are checked where the
    docs give them all (a stand-in for ``<seed>`` is no seed)."""
    parser = OverridesParser.create()
    single = []
    for text in (w for w in overrides if not w.startswith("-")):
        override = parser.parse_override(text)
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            text = f"{override.get_key_element()}={first}"
        single.append(text)
    cfg = compose_config(f"{entry}.yaml", single)
    if entry in ("train", "eval") and not filled:
        check_config(cfg)  # types and ranges of the common keys, optimizer arguments
