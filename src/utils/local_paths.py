"""Keep the training machine's absolute paths out of files that travel (checkpoint metadata)."""

import os
from pathlib import Path
from typing import Any

#: Stands for an absolute path of the training machine outside the project folder.
LOCAL_PATH = "<local path>"


def _project_root() -> Path | None:
    root = os.environ.get("PROJECT_ROOT")  # set by rootutils in every entry point
    return Path(root).resolve() if root else None


def portable_paths(value: Any, root: Path | None = None) -> Any:
    """Copy of plain data where absolute paths are relative to the project root, or
    :data:`LOCAL_PATH` when they lie outside it (a home, a temp folder, a cluster disk)."""
    root = root or _project_root()
    if isinstance(value, dict):
        return {k: portable_paths(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v, root) for v in value]
    if not isinstance(value, str) or not (
        value.startswith(("/", "~")) or Path(value).is_absolute()
    ):
        return value
    path = Path(value).expanduser()
    if root is not None and path.resolve().is_relative_to(root):
        relative = path.resolve().relative_to(root).as_posix()
        return f"{relative}/" if value.endswith("/") and relative != "." else relative
    return LOCAL_PATH


def localize_paths(config: dict[str, Any], root_dir: str | Path, data_dir: str | Path) -> dict:
    """Undo :func:`portable_paths` for a datamodule config on this machine: ``data_dir`` (when
    a placeholder) becomes ``data_dir``, relative paths are taken from ``root_dir``.

    :raises ValueError: When another key still holds :data:`LOCAL_PATH`, naming the override.
    """
    out = dict(config)
    for key, value in config.items():
        if value == LOCAL_PATH:
            if key != "data_dir":
                raise ValueError(
                    f"The stored data config's {key} was a path of the training machine; "
                    f"pass +data.{key}=/path/on/this/machine."
                )
            out[key] = str(data_dir)
        elif isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            if key.endswith(("_dir", "_path", "_file")):
                out[key] = str(Path(root_dir) / value)
            elif key == "path" and (Path(root_dir) / value).exists():
                out[key] = str(Path(root_dir) / value)  # a file; a hub id stays as it is
    return out
