"""Keep checkpoints loadable with ``torch.load(weights_only=True)``.

Hydra passes lists and dicts as ``ListConfig``/``DictConfig``; saved as hyperparameters they
would make every checkpoint need an unsafe unpickler. Convert them to plain Python first.
"""

from collections.abc import MutableMapping
from typing import Any

from omegaconf import OmegaConf


def to_plain(value: Any) -> Any:
    """Recursively turn OmegaConf containers, tuples and mappings into plain lists/dicts."""
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


def make_plain(hparams: MutableMapping[str, Any]) -> None:
    """Convert every value of a Lightning ``hparams`` mapping to plain data, in place."""
    for key, value in list(hparams.items()):
        hparams[key] = to_plain(value)
