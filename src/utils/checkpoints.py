"""Checkpoints that survive crashes and resume exactly.

- :func:`atomic_torch_save` writes a file to a temporary name in the same folder, fsyncs it
  and renames it over the old one, so a crash while saving leaves the previous file intact
  (the checkpoint callback, :mod:`src.callbacks.model_checkpoint`, saves through it).
- :func:`validate_checkpoint` and :func:`resolve_ckpt_path` check ``ckpt_path`` before
  anything is built; ``ckpt_path=last`` finds the newest ``last.ckpt`` of the same experiment.
- :func:`collect_rng_state` / :func:`restore_rng_state`: the global RNG states, which
  Lightning does not save, as plain data (``torch.load(weights_only=True)`` can read them).
"""

import errno
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from src.utils import pylogger
from src.utils.experiment_names import canonical_name
from src.utils.trusted_targets import check_trusted_config

log = pylogger.RankedLogger(__name__, rank_zero_only=True)

#: Keys every Lightning checkpoint has; resuming also needs the training state.
LIGHTNING_KEYS = ("state_dict", "pytorch-lightning_version", "epoch", "global_step")
RESUME_KEYS = ("optimizer_states", "loops")
#: Checkpoint key of the metadata predict/export rebuild the model from (no models import:
#: utils is the ground floor; ``src.models.classifier_module`` uses the same value).
METADATA_KEY = "lhte"


# ------------------------------------------------------------------ atomic checkpoint files
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` so that readers see either the old or the new file, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the rename makes them visible
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; match a normally created file
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, err) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # persist the rename itself
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# ------------------------------------------------------------------------ RNG states
def collect_rng_state() -> dict[str, Any]:
    """Global RNG states of torch (CPU and initialised CUDA devices), numpy and Python."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": [version, list(py_state), py_gauss],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global RNG states saved by :func:`collect_rng_state`."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for device, device_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, device)
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))


# ----------------------------------------------------------- ckpt_path check and lookup
def validate_checkpoint(path: str | Path, resume: bool = False) -> Path:
    """Check that ``path`` is a Lightning checkpoint that loads with ``weights_only=True``.

    :param path: The checkpoint file.
    :param resume: Also require the training state (optimizer and loops) needed to resume.
    :return: The absolute path.
    :raises FileNotFoundError: When ``path`` does not exist or is a folder.
    :raises ValueError: When the file is not a readable Lightning checkpoint.
    """
    # mmap: tensors are mapped, not read, so checking a large checkpoint stays cheap.
    ckpt = load_checkpoint(path, resume=resume, mmap=True)
    check_checkpoint_targets(ckpt, path)
    return Path(path).expanduser().absolute()


def check_checkpoint_targets(ckpt: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint whose stored configs name a ``_target_`` outside the allow-list.

    The ``lhte`` metadata (model and data configs) and Lightning's ``hyper_parameters`` are
    what a loader could instantiate; see :mod:`src.utils.trusted_targets`.
    """
    metadata = ckpt.get(METADATA_KEY) or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"ckpt_path={path}: '{METADATA_KEY}' is {type(metadata).__name__}.")
    check_trusted_config(metadata, f"ckpt_path={path} ({METADATA_KEY} metadata)")
    check_trusted_config(ckpt.get("hyper_parameters") or {}, f"ckpt_path={path} (hyper_parameters)")


def _write_error(path: Path, err: Exception) -> OSError:
    """What to tell a user whose checkpoint could not be written (torch's own message on a full
    disk is "unexpected pos ... vs ...")."""
    free = shutil.disk_usage(path.parent).free
    if free < 64 * 2**20 or getattr(err, "errno", None) == errno.ENOSPC:
        return OSError(
            errno.ENOSPC,
            f"Could not write {path}: the disk holding {path.parent} is full ({free / 2**20:.0f} "
            "MiB free). Free some space or set paths.output_dir (or paths.log_dir) to another "
            "disk; the previous checkpoint, if any, is intact.",
        )
    return OSError(f"Could not write {path}: {type(err).__name__}: {err}")


def _not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be a torch checkpoint, judged from its first bytes (or ``None``)."""
    with open(path, "rb") as file:
        head = file.read(64)
    if not head:
        return "it is empty (0 bytes): the run that wrote it was killed or its disk was full"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # zip archive or legacy pickle
        return None
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        preview = head.decode("ascii").splitlines()[0][:40]
        return f"it is a text file (it starts with {preview!r}), not a checkpoint"
    return "it is neither a torch zip archive nor a legacy torch file"


def load_checkpoint(path: str | Path, resume: bool = False, mmap: bool = False) -> dict[str, Any]:
    """Load a Lightning checkpoint with ``weights_only=True``, with clear errors for bad files.

    :param path: The checkpoint file.
    :param resume: Also require the training state (optimizer and loops) needed to resume.
    :param mmap: Map tensors instead of reading them (cheap checks of large files).
    :return: The checkpoint dict (tensors on the CPU).
    :raises FileNotFoundError: When ``path`` does not exist or is a folder.
    :raises ValueError: When the file is not a readable Lightning checkpoint.
    """
    path = Path(path).expanduser().absolute()
    expected = "a .ckpt file written by Lightning (e.g. <run>/checkpoints/last.ckpt)"
    if not path.exists():
        raise FileNotFoundError(f"ckpt_path={path} does not exist; expected {expected}.")
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path} is a folder; expected {expected}.")
    reason = _not_a_checkpoint(path)
    if reason:
        raise ValueError(f"ckpt_path={path}: {reason}. Expected {expected}.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"ckpt_path={path} is not a readable checkpoint ({type(err).__name__}: {first_line}); "
            f"expected {expected}, loadable with torch.load(weights_only=True). A truncated "
            "file usually means the run was killed while saving with an older template."
        ) from err
    missing = [k for k in LIGHTNING_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"ckpt_path={path} is not a Lightning checkpoint: it lacks {missing}.")
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if resume and missing:
        raise ValueError(
            f"ckpt_path={path} holds weights only (no {missing}), so training cannot resume from "
            "it. Resume from a full checkpoint (last.ckpt), or start a new run that loads these "
            "weights."
        )
    return ckpt


def _none_if_null(choice: Any) -> Any:
    return None if choice in (None, "null", "None") else choice


def run_experiment(run_dir: Path) -> tuple[bool, Any]:
    """``(known, experiment)``: the experiment Hydra recorded in ``run_dir/.hydra/hydra.yaml``."""
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    try:
        with open(hydra_file) as file:
            # The file holds ${...} interpolations; plain YAML reads the recorded choice as is.
            choices = yaml.safe_load(file)["hydra"]["runtime"]["choices"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return False, None
    return True, _none_if_null(choices.get("experiment"))


#: Keys of ``model`` / ``data`` that may differ between a run and its resume: where the data
#: lies and how it is loaded, not what is learned.
RESUME_FREE_KEYS = (
    "data.data_dir",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.prefetch_factor",
    "model.compile",
)
#: Keys that may also differ when a checkpoint is only evaluated.
EVAL_FREE_KEYS = ("data.batch_size",)
#: Hyperparameters a resumed run takes from its checkpoint (Lightning restores the optimizer
#: and scheduler state, learning rate included); a differing override is reported and replaced.
RESUME_FROM_CHECKPOINT = ("model.optimizer", "model.scheduler")


def run_config(run_dir: Path) -> dict[str, Any] | None:
    """The composed config Hydra saved in ``run_dir/.hydra/config.yaml`` (unresolved)."""
    try:
        with open(run_dir / ".hydra" / "config.yaml") as file:
            saved = yaml.safe_load(file)
    except (OSError, yaml.YAMLError):
        return None
    return saved if isinstance(saved, dict) else None


def _flatten(value: Any, key: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return {
            k: v for name, sub in value.items() for k, v in _flatten(sub, f"{key}.{name}").items()
        }
    return {key: value}


def config_differences(saved: dict[str, Any], cfg: DictConfig, keys: tuple[str, ...]) -> dict:
    """``{key: (saved value, current value)}`` of the leaves under ``keys`` (``model``, ...)
    that differ between a run's saved config and ``cfg``, compared unresolved."""
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for node in keys:
        current = OmegaConf.select(cfg, node)
        current = OmegaConf.to_container(current) if isinstance(current, DictConfig) else current
        old |= _flatten(_select(saved, node), node)
        new |= _flatten(current, node)
    return {
        k: (old.get(k), new.get(k))
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    }


def _select(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def resume_mismatch(saved: dict[str, Any], cfg: DictConfig, resume: bool = True) -> dict:
    """The ``model``/``data`` differences that forbid resuming (or, with ``resume=False``,
    evaluating: the batch size may differ too) a run with ``cfg``."""
    diffs = config_differences(saved, cfg, ("model", "data"))
    skip = RESUME_FREE_KEYS + RESUME_FROM_CHECKPOINT + (() if resume else EVAL_FREE_KEYS)
    return {
        k: v for k, v in diffs.items() if not any(k == s or k.startswith(f"{s}.") for s in skip)
    }


def _describe(diffs: dict) -> str:
    return "".join(
        f"\n    {k}: run has {a!r}, this config has {b!r}" for k, (a, b) in diffs.items()
    )


def find_last_checkpoint(
    search_dir: str | Path,
    experiment: str | None,
    cfg: DictConfig | None = None,
    resume: bool = True,
) -> Path:
    """The newest ``<run>/checkpoints/last.ckpt`` under ``search_dir`` of ``experiment``.

    Runs (``runs/<time>``) and multirun jobs (``multiruns/<time>/<job>``) are searched; a run
    belongs to an experiment when its ``.hydra/hydra.yaml`` records that ``experiment`` choice
    (an old name and its new name count as the same experiment).
    With ``cfg``, the run's saved ``model`` and ``data`` configs must also match it (see
    :func:`resume_mismatch`); newer runs that do not are skipped with a warning.

    :raises FileNotFoundError: Naming what was searched and the checkpoints of other experiments.
    :raises ValueError: When runs of the experiment exist but none matches ``cfg``.
    """
    search_dir = Path(search_dir)
    found = sorted(
        (p for p in search_dir.rglob("last.ckpt") if p.parent.name == "checkpoints"),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    others = []
    mismatched = []
    for ckpt in found:
        known, choice = run_experiment(ckpt.parent.parent)
        if not (known and canonical_name(choice) == canonical_name(experiment)):
            others.append(
                f"{ckpt} (experiment={choice if known else 'unknown: no .hydra/hydra.yaml'})"
            )
            continue
        saved = run_config(ckpt.parent.parent) if cfg is not None else None
        diffs = resume_mismatch(saved, cfg, resume) if saved is not None else {}
        if not diffs:
            if cfg is not None and saved is None:
                log.warning(f"{ckpt}: no .hydra/config.yaml, its model/data are not compared")
            return ckpt
        log.warning(f"ckpt_path=last: skipping {ckpt}, its config differs:{_describe(diffs)}")
        mismatched.append(f"{ckpt}:{_describe(diffs)}")
    if mismatched:
        listing = "".join(f"\n  - {m}" for m in mismatched[:5])
        raise ValueError(
            f"ckpt_path=last: no run of experiment={experiment} under {search_dir} has this "
            f"model and data config (ignored: {list(RESUME_FREE_KEYS)}). Runs found:{listing}\n"
            "Pass the overrides of the run to resume, or ckpt_path=/path/to/last.ckpt."
        )
    listing = "".join(f"\n  - {o}" for o in others[:10]) or " none"
    raise FileNotFoundError(
        f"ckpt_path=last: no checkpoints/last.ckpt of experiment={experiment} under {search_dir} "
        f"(searched runs/*/ and multiruns/*/*/, newest first). Checkpoints found:{listing}\n"
        "Pass ckpt_path=/path/to/last.ckpt, or the experiment=... of the run to resume."
    )


def take_checkpoint_hyperparameters(cfg: DictConfig, ckpt: Path) -> dict:
    """On resume, replace ``cfg``'s optimizer/scheduler by the ones of the checkpoint's run
    (what Lightning actually restores), warning about each differing override.

    :return: ``{key: (checkpoint value, override)}`` of what was replaced.
    """
    saved = run_config(ckpt.parent.parent)
    if saved is None:
        return {}
    diffs = config_differences(saved, cfg, RESUME_FROM_CHECKPOINT)
    if not diffs:
        return {}
    log.warning(
        f"Resuming {ckpt}: the checkpoint's optimizer/scheduler state is restored, so these "
        f"overrides are replaced by the run's values (start a new run to change them):"
        f"{_describe(diffs)}"
    )
    # The run folder may come from elsewhere with the checkpoint: its values build nothing else.
    replaced = {node: _select(saved, node) for node in RESUME_FROM_CHECKPOINT}
    check_trusted_config(replaced, f"{ckpt.parent.parent / '.hydra' / 'config.yaml'}")
    with open_dict(cfg):
        for node, value in replaced.items():
            OmegaConf.update(cfg, node, value, merge=False, force_add=True)
    return diffs


def current_experiment() -> Any:
    """The ``experiment`` choice of the running Hydra job (``None`` when none or no Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return _none_if_null(HydraConfig.get().runtime.choices.get("experiment"))


def resolve_ckpt_path(cfg: DictConfig, resume: bool = False) -> str | None:
    """Check ``cfg.ckpt_path`` (resolving ``last``) and store the absolute path in ``cfg``.

    :param cfg: The task config; ``cfg.paths.log_dir`` and ``cfg.task_name`` locate ``last``.
    :param resume: The checkpoint must hold the full training state.
    :return: The absolute checkpoint path, or ``None`` when ``ckpt_path`` is not set.
    """
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path in (None, ""):
        return None
    if str(ckpt_path) == "last":
        # eval sets ckpt_search_dir to the training runs; train searches its own task folder.
        search_dir = Path(
            cfg.get("ckpt_search_dir") or Path(cfg.paths.log_dir) / str(cfg.task_name)
        )
        ckpt_path = find_last_checkpoint(search_dir, current_experiment(), cfg, resume)
        log.info(f"ckpt_path=last: using {ckpt_path}")
    path = validate_checkpoint(ckpt_path, resume=resume)
    if resume and take_checkpoint_hyperparameters(cfg, path):
        rewrite_run_info(cfg)  # it records the values actually used
    with open_dict(cfg):
        cfg.ckpt_path = str(path)
    return str(path)


def rewrite_run_info(cfg: DictConfig) -> None:
    """Write ``run_info.yaml`` again (when the task wrote one) after ``cfg`` changed."""
    from src.utils.provenance import RUN_INFO, write_run_info

    try:
        written = (Path(cfg.paths.output_dir) / RUN_INFO).is_file()
    except Exception:  # no output folder (no Hydra run): nothing to update
        return
    if written:
        write_run_info(cfg)
