"""Record where a run came from: ``<output_dir>/run_info.yaml``.

Written by rank zero when a task starts and updated when it ends. It holds the command line,
the git commit and dirty state of the project, package versions, Hydra's config choices and
the resolved config, all with secrets masked (:mod:`src.utils.secrets`). Hydra's own
``.hydra/config.yaml`` keeps the unresolved config next to it.
"""

import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.utils import pylogger
from src.utils.secrets import collect_secrets, redact, redact_log_records, redact_text

log = pylogger.RankedLogger(__name__, rank_zero_only=True)

RUN_INFO = "run_info.yaml"
PACKAGES = ("torch", "torchvision", "lightning", "hydra-core", "omegaconf", "timm", "torchmetrics")
_CHANGED_FILES_SHOWN = 50


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``packages`` (``None`` when one is missing) and of Python."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
    )
    return result.stdout.rstrip("\n")  # keep the leading blanks of `status --porcelain`


def git_state(root: str | Path) -> dict[str, Any]:
    """Commit, branch and dirty state of the git checkout at ``root``.

    Never raises: outside a git checkout (or without git) it returns ``{"available": False,
    "reason": ...}`` so runs from an exported copy of the project still start.
    """
    root = Path(root)
    try:
        commit = _git(root, "rev-parse", "HEAD")
        branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
        changed = _git(root, "status", "--porcelain", "--untracked-files=normal").splitlines()
    except FileNotFoundError:
        return {"available": False, "reason": "git is not installed"}
    except subprocess.CalledProcessError as err:
        reason = (err.stderr or "").strip().splitlines()
        return {"available": False, "reason": reason[0] if reason else f"git failed in {root}"}
    except subprocess.TimeoutExpired:
        return {"available": False, "reason": f"git timed out in {root}"}
    return {
        "available": True,
        "commit": commit,
        "branch": branch,
        "dirty": bool(changed),
        # A few lines of `git status --porcelain` say what differs from the commit.
        "changed_files": changed[:_CHANGED_FILES_SHOWN],
        "changed_files_total": len(changed),
    }


def hydra_choices() -> dict[str, Any]:
    """Hydra's config group choices of this run (``experiment``, ``data``...), if in Hydra."""
    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")}


def build_run_info(cfg: DictConfig) -> dict[str, Any]:
    """The provenance record of a run (plain data, secrets masked)."""
    secrets = collect_secrets(cfg)
    root = cfg.paths.get("root_dir") or Path.cwd()
    info = {
        "status": "running",
        "started_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "command": redact_text(" ".join([sys.executable, *sys.argv]), secrets),
        "cwd": str(Path.cwd()),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "task_name": cfg.get("task_name"),
        "seed": cfg.get("seed"),
        "ckpt_path": _ckpt_path(cfg, secrets),
        "git": git_state(root),
        "packages": package_versions(),
        "hydra_choices": hydra_choices(),
        "config": redact(cfg, secrets),
    }
    info["config"].pop("hydra", None)  # Hydra's own settings are in .hydra/hydra.yaml
    return info


def _write(info: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(info)))
    tmp.replace(path)  # a reader never sees half a file


def scrub_hydra_files(output_dir: Path, secrets: set[str]) -> None:
    """Mask secret values and URL passwords Hydra wrote into its run files (``.hydra/*.yaml``).

    They come from command-line overrides (``hydra.sweeper.storage=postgresql://u:pw@host/db``).
    Interpolations such as ``${oc.env:WANDB_API_KEY}`` are kept: only literal values are masked.
    """
    for path in output_dir.glob(".*hydra*/*.yaml"):  # .hydra and Lightning's .pl_hydra_rank_N
        text = path.read_text()
        masked = redact_text(text, secrets)
        if masked != text:
            path.write_text(masked)


def mask_run_secrets(cfg: DictConfig) -> None:
    """Mask the run's secrets in every later log record and in Hydra's run files.

    Runs at the start of every task, whether or not ``run_info.yaml`` is written: Hydra has
    already saved the command line (``.hydra/*.yaml``) and the task's log is about to start.
    """
    secrets = collect_secrets(cfg)
    redact_log_records(secrets)  # the task's `<task>.log` and console, on every rank
    try:
        output_dir = Path(cfg.paths.output_dir)
    except Exception:  # no Hydra run: no run files to scrub
        return
    rank_zero_only(scrub_hydra_files)(output_dir, secrets)


@rank_zero_only
def write_run_info(cfg: DictConfig) -> Path | None:
    """Write ``run_info.yaml`` into ``cfg.paths.output_dir``; return its path."""
    try:
        output_dir = Path(cfg.paths.output_dir)
    except Exception as err:  # e.g. no Hydra run: provenance must never stop the task
        log.warning(f"run_info.yaml not written: no output folder ({err}).")
        return None
    path = output_dir / RUN_INFO
    _write(build_run_info(cfg), path)
    return path


@rank_zero_only
def finish_run_info(
    cfg: DictConfig,
    status: str,
    metrics: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """Add the end status, duration, final metrics (or the error) to ``run_info.yaml``.

    :param cfg: The task config (its ``ckpt_path`` is recorded again, as resolved by the task).
    :param status: ``finished``, ``failed``, ``pruned`` or ``interrupted`` (stopped by a signal
        after saving a resumable checkpoint).
    :param metrics: Final metrics of the task.
    :param error: ``"<ExceptionType>: <message>"`` of a failed task, or how to resume an
        interrupted one.
    """
    try:
        output_dir = Path(cfg.paths.output_dir)
    except Exception:
        return
    path = output_dir / RUN_INFO
    if not path.is_file():
        return
    secrets = collect_secrets(cfg)
    scrub_hydra_files(output_dir, secrets)
    info = OmegaConf.to_container(OmegaConf.load(path))
    now = datetime.now(timezone.utc)
    info["status"] = status
    info["ckpt_path"] = _ckpt_path(cfg, secrets)
    if error is not None:
        info["error"] = redact_text(error, secrets)
    info["finished_at"] = now.isoformat(timespec="milliseconds")
    elapsed = now - datetime.fromisoformat(info["started_at"])
    info["duration_s"] = round(elapsed.total_seconds(), 3)
    if metrics:
        info["metrics"] = {k: _to_float(v) for k, v in metrics.items()}
    _write(info, path)


def _ckpt_path(cfg: DictConfig, secrets: set[str]) -> str | None:
    value = cfg.get("ckpt_path")
    return None if value is None else redact_text(str(value), secrets)


def _to_float(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
