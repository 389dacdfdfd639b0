"""Load a local weights file (``model.net.checkpoint_path``) into a library network.

The file is read as data only: ``.safetensors`` through :func:`safetensors.torch.load_file`,
anything else through ``torch.load(weights_only=True)``, which refuses pickled objects (no
code runs). Its keys are matched to the network's by stripping the wrappers training scripts
add (``module.`` from DDP, ``_orig_mod.`` from ``torch.compile``, ``model.``/``net.`` of a
LightningModule; a Lightning checkpoint's ``state_dict`` entry is unwrapped). Tensors of the
classifier head and of a replaced stem are skipped when their shapes differ, and the file's
own classifier (a few tensors the network lacks) is left unused; any other difference (a
backbone tensor missing or of another shape, many unused tensors) means the file belongs to
another network and is one error naming the file and a few keys.
"""

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from src.utils import pylogger

log = pylogger.RankedLogger(__name__, rank_zero_only=True)

KEY = "model.net.checkpoint_path"
#: Prefixes that wrappers put before a network's own keys, stripped in turn.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "net.", "state_dict.")
#: Entries of a checkpoint dict that may hold the state dict itself.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
#: How many keys an error or report names.
SHOWN = 4
#: File tensors the network may lack: the file's classifier (weight and bias, maybe a norm).
MAX_UNUSED = 4


@dataclass
class LoadReport:
    """What a weights file gave the network (keys are the network's own)."""

    path: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # key -> "file shape vs model shape"
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # file keys the network lacks

    def summary(self) -> str:
        """One line: counts and a few keys of each kind."""
        parts = [f"loaded {len(self.loaded)} tensors from {self.path}"]
        if self.skipped:
            shown = [f"{k} ({v})" for k, v in list(self.skipped.items())[:SHOWN]]
            parts.append(f"skipped {len(self.skipped)} (shape differs): {', '.join(shown)}")
        if self.missing:
            parts.append(f"not in the file {len(self.missing)}: {_few(self.missing)}")
        if self.unexpected:
            parts.append(f"unused from the file {len(self.unexpected)}: {_few(self.unexpected)}")
        return "; ".join(parts)


def _few(keys: list[str]) -> str:
    more = f" ... (+{len(keys) - SHOWN})" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or torch state-dict file, read without unpickling.

    :raises FileNotFoundError: When ``path`` is not a file.
    :raises ValueError: When the file is unreadable, holds Python objects, or no tensors.
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise FileNotFoundError(
            f"{KEY}={path} is not a file; give a .safetensors file or a torch state dict "
            "(torch.save(model.state_dict(), 'weights.pt'))."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:
            raise ValueError(
                f"{KEY}={path} is not a readable safetensors file ({type(err).__name__}: "
                f"{_first_line(err)})."
            ) from err
    with open(path, "rb") as file:
        head = file.read(4)
    zipped = head == b"PK\x03\x04"
    if not zipped and head[:1] != b"\x80":
        raise ValueError(
            f"{KEY}={path} is neither a torch file nor a .safetensors file (name safetensors "
            "files *.safetensors)."
        )
    try:  # weights_only: tensors and plain containers only, never arbitrary objects
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{KEY}={path} holds Python objects, not just tensors, and is refused (loading "
            f"them could run code: {_first_line(err)}). Save a plain state dict instead: "
            "torch.save(model.state_dict(), 'weights.pt') or safetensors.torch.save_file."
        ) from err
    except Exception as err:
        raise ValueError(
            f"{KEY}={path} is not a readable torch file ({type(err).__name__}: {_first_line(err)})."
        ) from err
    return _tensors(obj, path)


def _tensors(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap a checkpoint dict down to its ``{key: tensor}`` entries."""
    for _ in range(3):  # e.g. {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if not isinstance(obj, dict) or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        nested = next((obj[k] for k in NESTED_KEYS if isinstance(obj.get(k), dict)), None)
        if nested is None:
            break
        obj = nested
    tensors = (
        {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if isinstance(obj, dict)
        else {}
    )
    if not tensors:
        what = f"keys {_few([str(k) for k in obj])}" if isinstance(obj, dict) else "no dict"
        raise ValueError(f"{KEY}={path} holds no tensors ({what}); expected a state dict.")
    return tensors


def _candidates(key: str) -> list[str]:
    """``key`` and what it becomes as the wrapper prefixes come off, one by one."""
    out = [key]
    while True:
        prefix = next((p for p in WRAPPER_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            return out
        key = key[len(prefix) :]
        out.append(key)


def _target_key(key: str, target: dict[str, torch.Tensor]) -> str | None:
    for candidate in _candidates(key):
        for name in (candidate, f"backbone.{candidate}"):
            if name in target:
                return name
    return None


def load_weights_file(
    net: nn.Module, path: str | Path, may_differ: tuple[str, ...] = ("head.",)
) -> LoadReport:
    """Copy the matching tensors of the file at ``path`` into ``net`` (which has ``backbone``).

    :param net: A network whose state-dict keys start with ``backbone.`` (and ``head.``).
    :param path: A ``.safetensors`` file or a torch state-dict / Lightning checkpoint file.
    :param may_differ: Key prefixes of ``net`` whose tensors are skipped, not refused, when
        their shapes differ (the new head, a replaced stem).
    :return: The :class:`LoadReport`, also logged.
    :raises ValueError: When nothing matches, or a backbone tensor is missing or differs.
    """
    path = Path(path).expanduser().absolute()
    source = read_state_dict(path)
    target = net.state_dict()
    report = LoadReport(str(path))
    matched: dict[str, torch.Tensor] = {}
    differs: dict[str, str] = {}
    for key, value in source.items():
        name = _target_key(key, target)
        if name is None:
            report.unexpected.append(key)
        elif value.shape == target[name].shape:
            matched[name] = value
        else:
            shapes = f"file {list(value.shape)} vs model {list(target[name].shape)}"
            (report.skipped if name.startswith(may_differ) else differs)[name] = shapes
    report.loaded = sorted(matched)
    report.missing = [
        k
        for k in target
        if k not in matched
        and k not in report.skipped
        and k not in differs
        and not k.startswith(may_differ)
        and not k.endswith("num_batches_tracked")  # BN step counters: timm's files omit them
    ]
    expected = [k for k in target if k.startswith("backbone.")]
    unused = [k for k in report.unexpected if not k.endswith("num_batches_tracked")]
    if not matched or differs or report.missing or len(unused) > MAX_UNUSED:
        problems = []
        if differs:
            shown = [f"{k} ({v})" for k, v in list(differs.items())[:SHOWN]]
            problems.append(f"{len(differs)} tensors differ in shape: {', '.join(shown)}")
        if report.missing:
            problems.append(f"{len(report.missing)} are not in it: {_few(report.missing)}")
        if matched and len(unused) > MAX_UNUSED:
            problems.append(f"{len(unused)} of its tensors have no place here: {_few(unused)}")
        if not matched:
            problems.append(f"none of its keys match ({_few(list(source))})")
        raise ValueError(
            f"{KEY}={path} does not fit this network's backbone: {'; '.join(problems)}. The "
            f"backbone expects keys like {_few(expected)}. Use a file of the same architecture "
            "(e.g. timm.create_model(model.net.model_name).state_dict()); for patch models "
            "keep the image size it was trained at (model.net.resize_to=224)."
        )
    net.load_state_dict(matched, strict=False)
    log.info(f"{KEY}: {report.summary()}")
    return report
