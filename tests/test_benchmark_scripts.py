"""Every benchmark script imports without running, answers ``--help``, and stays small."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p.stem for p in (BENCHMARKS / "scripts").glob("*.py"))
#: Longest a benchmark source file may grow before it should be split.
MAX_LINES = 320


def test_the_scripts_are_found() -> None:
    """The list below is not empty by accident (a moved folder would pass every test)."""
    for name in ("benchmark_cifar", "benchmark_speed", "architecture_table", "sweep_report"):
        assert name in SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_imports_without_running(name: str, capsys: pytest.CaptureFixture) -> None:
    """Importing a script defines its ``main`` and prints nothing: nothing runs on import."""
    module = importlib.import_module(f"benchmarks.scripts.{name}")
    assert callable(module.main) and module.__doc__
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_help_exits_zero(name: str) -> None:
    """``python benchmarks/scripts/<name>.py --help`` from the project root prints its usage."""
    run = subprocess.run(
        [sys.executable, f"benchmarks/scripts/{name}.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage:") and f"{name}.py" in run.stdout


def test_benchmark_sources_stay_small() -> None:
    """No Python file under benchmarks/ (scripts and their shared lib) passes the line limit."""
    sources = sorted(BENCHMARKS.rglob("*.py"))
    assert len(sources) > len(SCRIPTS)  # the shared lib is counted too
    long = {
        str(p.relative_to(ROOT)): n
        for p in sources
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these files (over {MAX_LINES} lines): {long}"
