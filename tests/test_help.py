"""``--help`` lists the same groups and options with the listing sped up, without torch."""

import subprocess
import sys
from pathlib import Path

import pytest

from src.utils.hydra_help import wants_help

ROOT = Path(__file__).resolve().parents[1]

# Runs src/train.py's Hydra main with ``--help``; the speed-up only when asked.
PROBE = """
import runpy, sys
sys.argv = ["src/train.py", "--help"]
if not {fast}:  # train.py's own call becomes a no-op
    import src.utils.hydra_help
    src.utils.hydra_help.speed_up_help = lambda: False
import hydra._internal.config_repository as repo
built = []
init = repo.CachingConfigRepository.__init__
repo.CachingConfigRepository.__init__ = lambda self, *a, **k: (built.append(1), init(self, *a, **k))[1]
try:
    runpy.run_path("src/train.py", run_name="__main__")
except SystemExit:
    pass
print("REPOSITORY_VIEWS", len(built), "TORCH" if "torch" in sys.modules else "NO_TORCH")
"""


def _probe(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in the project folder."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _help(fast: bool) -> tuple[str, int, bool]:
    done = _probe(PROBE.format(fast=fast))
    assert done.returncode == 0, done.stdout + done.stderr
    text, _, tail = done.stdout.rpartition("REPOSITORY_VIEWS")
    views, torch = tail.split()
    return text, int(views), torch == "TORCH"


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["model=cnn", "--hydra-help"]])
def test_help_flags_are_recognised(argv: list[str]) -> None:
    assert wants_help(argv)
    assert not wants_help(["model=cnn", "--cfg", "job"])


def test_help_is_unchanged_and_builds_one_repository_view() -> None:
    slow, slow_views, slow_torch = _help(fast=False)
    fast, fast_views, fast_torch = _help(fast=True)
    assert fast == slow
    assert "experiment: " in fast and "model/net: " in fast and "recipe: cifar_strong" in fast
    assert fast_views < slow_views / 10, (fast_views, slow_views)
    assert not fast_torch and not slow_torch


# Runs an entry point as a script with the given arguments; reports whether torch was loaded.
ENTRY_PROBE = """
import runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as done:
    code = done.code
print("EXIT", code, "TORCH" if "torch" in sys.modules else "NO_TORCH")
"""


@pytest.mark.parametrize("entry", ["predict", "export"])
@pytest.mark.parametrize("flags", [["--help"], ["--cfg", "job"], ["--info", "config"]])
def test_predict_and_export_answer_info_flags_before_torch(entry: str, flags: list[str]) -> None:
    """predict/export import torch and Lightning at load time; ``--help``, ``--cfg`` and
    ``--info`` are answered from the config before those imports."""
    done = _probe(ENTRY_PROBE.format(argv=[f"src/{entry}.py", *flags]))
    output = done.stdout + done.stderr
    assert done.returncode == 0 and output.rstrip().endswith("EXIT 0 NO_TORCH"), output
    expected = {"--help": f"{entry} is powered by Hydra", "--cfg": f"task_name: {entry}"}
    assert expected.get(flags[0], "Config search path") in output, output


@pytest.mark.parametrize(
    "argv, info",
    [(["--cfg", "job"], True), (["--cfg=all"], True), (["-i", "config"], True), (["a=1"], False)],
)
def test_info_flags_are_recognised(argv: list[str], info: bool) -> None:
    from src.utils.hydra_help import wants_info

    assert wants_info(argv) is info
