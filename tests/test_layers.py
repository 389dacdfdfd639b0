"""The layers import only downwards: utils is the ground floor, data and models stand on it.

Every ``import`` statement is read with ``ast`` (module-level and inside functions), so a lazy
upward import fails here as surely as one at the top of a file.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from src.utils import _LAZY

SRC = Path(__file__).resolve().parents[1] / "src"
ENTRY_POINTS = ("src.train", "src.eval", "src.predict", "src.export")


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path`` (a module of ``package``), relative imports
    made absolute."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # ``from src import models`` imports src.models as much as ``import src.models``.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            found.append((node.lineno, base))
    return found


def upward_imports(package: str, forbidden: tuple[str, ...], root: Path = SRC.parent) -> list[str]:
    """``file:line module`` for every import of a ``forbidden`` package in ``package`` (dotted,
    e.g. ``src.utils``) under ``root``."""
    hits = []
    for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
        module_package = ".".join(path.relative_to(root).parts[:-1])
        for line, module in imported_modules(path, module_package):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                hits.append(f"{path.relative_to(root)}:{line} {module}")
    return hits


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    utils = tmp_path / "src" / "utils"
    utils.mkdir(parents=True)
    (utils / "probe.py").write_text(
        "import os\n\ndef f():\n    from src.models import build\n    import src.data.x\n"
        "    from ..callbacks import interrupt\n"
    )
    assert upward_imports("src.utils", ("src.data", "src.models", "src.callbacks"), tmp_path) == [
        "src/utils/probe.py:4 src.models.build",
        "src/utils/probe.py:4 src.models",
        "src/utils/probe.py:5 src.data.x",
        "src/utils/probe.py:6 src.callbacks.interrupt",
        "src/utils/probe.py:6 src.callbacks",
    ]


def test_utils_imports_nothing_above_it() -> None:
    assert upward_imports("src.utils", ("src.data", "src.models", "src.callbacks")) == []


def test_the_only_upward_reference_in_utils_is_the_documented_lazy_map() -> None:
    """The original template's ``from src.utils import instantiate_model`` still works, through
    names in the map (strings, not imports) that point at src.models.build only."""
    upward = {name: module for name, module in _LAZY.items() if not module.startswith("src.utils")}
    assert upward == {
        "instantiate_model": "src.models.build",
        "load_model_from_checkpoint": "src.models.build",
    }
    import src.models.build
    import src.utils

    assert src.utils.instantiate_model is src.models.build.instantiate_model


def test_data_imports_neither_callbacks_nor_entry_points() -> None:
    assert upward_imports("src.data", ("src.callbacks", *ENTRY_POINTS)) == []


def test_models_import_no_data() -> None:
    assert upward_imports("src.models", ("src.data", "src.callbacks", *ENTRY_POINTS)) == []


def _imports_in_a_fresh_interpreter(statement: str) -> None:
    """An import cycle fails in a fresh interpreter, whatever this process imported first."""
    result = subprocess.run(
        [sys.executable, "-c", statement],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=SRC.parent,
    )
    assert result.returncode == 0, result.stderr


def test_utils_imports_alone() -> None:
    _imports_in_a_fresh_interpreter("import src.utils")


@pytest.mark.slow  # loads torch in a new process
def test_checks_and_build_import_without_cycles() -> None:
    _imports_in_a_fresh_interpreter("import src.utils.checks, src.models.build")
    _imports_in_a_fresh_interpreter("import src.models.build, src.utils.checks")
