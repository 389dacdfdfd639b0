"""Checkpoints that survive crashes and resume exactly.

- :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file in the same folder,
  fsyncs it and renames it over the old one (``os.replace``), so a crash while saving leaves
  the previous ``last.ckpt`` intact. Lightning's own ``_atomic_save`` writes the temporary
  file in the system temp folder and moves it with ``shutil.move``, which falls back to an
  in-place copy (not atomic) when ``/tmp`` is another filesystem, and never fsyncs.
- :class:`ResumableModelCheckpoint` installs that IO and makes a resumed run checkpoint (and
  so test) exactly as the uninterrupted run would: it restores the logged metrics (without them
  Lightning postpones step checkpoints until the next validation) and, when a run resumes into
  a new run folder, keeps comparing against the best checkpoints of the earlier folder
  (Lightning forgets them when ``dirpath`` changes).
- :func:`validate_checkpoint` and :func:`resolve_ckpt_path` check ``ckpt_path`` before
  anything is built; ``ckpt_path=last`` finds the newest ``last.ckpt`` of the same experiment.
- :func:`collect_rng_state` / :func:`restore_rng_state`: the global RNG states, which
  Lightning does not save, as plain data (``torch.load(weights_only=True)`` can read them).
"""

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from fsspec.implementations.local import LocalFileSystem
from lightning import LightningModule, Trainer
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, open_dict

from src.utils import pylogger
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (remote paths keep Lightning's IO)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Save ``checkpoint`` to ``path`` atomically when ``path`` is on a local disk."""
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)


class ResumableModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with atomic saves whose decisions continue exactly after a resume.

    Takes the arguments of :class:`~lightning.pytorch.callbacks.ModelCheckpoint`.
    """

    #: Checkpoint key holding ``trainer.callback_metrics`` at save time.
    METRICS_KEY = "callback_metrics"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics_to_restore: dict[str, Any] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Resolve the folder, then make the strategy's default checkpoint IO atomic."""
        super().setup(trainer, pl_module, stage)
        # Only the plain default is replaced: a user-chosen or strategy-specific IO is kept.
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Also save a step checkpoint that Lightning postponed to the end of validation.

        Lightning 2.6 postpones a step save that lands on the last batch of an epoch (or comes
        before the first validation) to ``on_validation_end``, which does nothing when saving at
        the end of the training epoch (the default): the checkpoint was silently never written.
        """
        deferred = getattr(self, "_defer_save_until_validation", False)
        super().on_train_epoch_end(trainer, pl_module)
        if (
            deferred
            and self._should_save_on_train_epoch_end(trainer)
            and not self._should_skip_saving_checkpoint(trainer)
        ):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
            self._defer_save_until_validation = False
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_stale_last(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Refresh ``last.ckpt`` at every epoch save point, not only when the metric improved."""
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_stale_last(trainer)

    def _refresh_stale_last(self, trainer: Trainer) -> None:
        """Lightning 2.6 writes ``last.ckpt`` only when a top-k file was saved at the same step,
        so with ``monitor`` set it went stale as soon as the metric stopped improving, and
        ``ckpt_path=last`` resumed from an older epoch. Save it at every epoch save point."""
        epochs = self._every_n_epochs
        if (
            self.save_last
            and epochs >= 1
            and (trainer.current_epoch + 1) % epochs == 0
            and not self._should_skip_saving_checkpoint(trainer)
            and self._last_global_step_saved != trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Save the logged metrics (0-d tensors) with the checkpoint."""
        metrics = trainer.callback_metrics
        checkpoint[self.METRICS_KEY] = {
            k: v.detach().cpu() for k, v in metrics.items() if isinstance(v, torch.Tensor)
        }

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Keep the saved metrics until training starts (the sanity check clears metrics)."""
        self._metrics_to_restore = dict(checkpoint.get(self.METRICS_KEY, {}))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Put back the metrics of the checkpoint, so ``monitor`` is known before validating."""
        super().on_train_start(trainer, pl_module)
        for key, value in self._metrics_to_restore.items():
            trainer.callback_metrics.setdefault(key, value.to(pl_module.device))
        self._metrics_to_restore = {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the best-model bookkeeping, also from a checkpoint of another run folder.

        Lightning forgets the best scores when ``dirpath`` changed (every resume writes a new
        Hydra run folder). The earlier best files are still on disk, so keep comparing with
        them; Lightning never deletes checkpoints outside its own ``dirpath``.
        """
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            return
        kept = {p: s for p, s in state_dict.get("best_k_models", {}).items() if Path(p).is_file()}
        self.best_model_path = ""
        if not kept:
            return
        self.best_k_models = kept
        pick_best = min if self.mode == "min" else max
        pick_kth = max if self.mode == "min" else min
        self.best_model_path = pick_best(kept, key=kept.get)
        self.best_model_score = kept[self.best_model_path]
        self.kth_best_model_path = pick_kth(kept, key=kept.get)
        self.kth_value = kept[self.kth_best_model_path]


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


def find_last_checkpoint(search_dir: str | Path, experiment: str | None) -> Path:
    """The newest ``<run>/checkpoints/last.ckpt`` under ``search_dir`` of ``experiment``.

    Runs (``runs/<time>``) and multirun jobs (``multiruns/<time>/<job>``) are searched; a run
    belongs to an experiment when its ``.hydra/hydra.yaml`` records that ``experiment`` choice.

    :raises FileNotFoundError: Naming what was searched and the checkpoints of other experiments.
    """
    search_dir = Path(search_dir)
    found = sorted(
        (p for p in search_dir.rglob("last.ckpt") if p.parent.name == "checkpoints"),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    others = []
    for ckpt in found:
        known, choice = run_experiment(ckpt.parent.parent)
        if known and choice == experiment:
            return ckpt
        others.append(f"{ckpt} (experiment={choice if known else 'unknown: no .hydra/hydra.yaml'})")
    listing = "".join(f"\n  - {o}" for o in others[:10]) or " none"
    raise FileNotFoundError(
        f"ckpt_path=last: no checkpoints/last.ckpt of experiment={experiment} under {search_dir} "
        f"(searched runs/*/ and multiruns/*/*/, newest first). Checkpoints found:{listing}\n"
        "Pass ckpt_path=/path/to/last.ckpt, or the experiment=... of the run to resume."
    )


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
        search_dir = Path(cfg.paths.log_dir) / str(cfg.task_name)
        ckpt_path = find_last_checkpoint(search_dir, current_experiment())
        log.info(f"ckpt_path=last: resuming from {ckpt_path}")
    path = str(validate_checkpoint(ckpt_path, resume=resume))
    with open_dict(cfg):
        cfg.ckpt_path = path
    return path
