"""What a datamodule yields, stated once: input shape, class names per head, normalization.

Every reader of data facts goes through :func:`describe`: the model builder fills a network's
shape from it, the early checks compare the model with it, and checkpoints store it (as
``class_names``, ``normalize`` and ``input_shape``) for predict and export. The project's
datamodules implement ``describe()``; any other ``LightningDataModule`` is described from the
attributes the original template's datamodules have (``num_classes``, ``input_shape``).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DataDescription:
    """The facts about a dataset that models, checks and checkpoints rely on.

    :param input_shape: ``(C, H, W)`` of the images the model receives; ``0`` for a size not
        known yet (an image folder before its images are read).
    :param class_names: ``{head: [name of class 0, name of class 1, ...]}``, primary head first;
        one head called ``label`` for plain (single-head) labels. An empty list: the class count
        is not known yet.
    :param mean: Per-channel mean of the [0, 1]-scaled images, used for normalization.
    :param std: Per-channel standard deviation, likewise.
    """

    input_shape: tuple[int, int, int]
    class_names: dict[str, list[str]]
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    @property
    def heads(self) -> dict[str, int]:
        """``{head: number of classes}``."""
        return {head: len(names) for head, names in self.class_names.items()}

    @property
    def normalize(self) -> dict[str, list[float]] | None:
        """``{mean, std}`` lists, or ``None`` when not known."""
        if not self.mean:
            return None
        return {"mean": list(self.mean), "std": list(self.std)}


def numbered(n: int) -> list[str]:
    """Placeholder class names ``"0" ... "n-1"``."""
    return [str(i) for i in range(n)]


def describe(datamodule: Any) -> DataDescription:
    """The :class:`DataDescription` of ``datamodule`` (its own ``describe()`` when it has one)."""
    if callable(getattr(datamodule, "describe", None)):
        return datamodule.describe()
    heads = getattr(datamodule, "heads", None)
    if heads is None and getattr(datamodule, "num_classes", None):
        heads = {"label": int(datamodule.num_classes)}
    class_names = fill_names(heads or {}, {}, getattr(datamodule, "class_names", None) or [])
    shape = tuple(int(s) for s in getattr(datamodule, "input_shape", ()) or ())
    return DataDescription(input_shape=shape, class_names=class_names)  # type: ignore[arg-type]


def fill_names(
    heads: Mapping[str, int], known: Mapping[str, Sequence[str]], primary: Sequence[str] = ()
) -> dict[str, list[str]]:
    """``{head: class names}`` for ``heads`` from ``known`` names per head; the first head may
    also take ``primary``. A head without names of the right length gets ``"0" ... "n-1"``."""
    names = {}
    for i, (head, n) in enumerate(heads.items()):
        candidates = [list(known.get(head) or []), list(primary) if i == 0 else []]
        found = next((c for c in candidates if len(c) == n), None)
        names[head] = [str(c) for c in found] if found else numbered(int(n))
    return names


def names_for_model(
    description: DataDescription | None, model_heads: Mapping[str, int]
) -> dict[str, list[str]]:
    """``{model head: class names}``; a model's single head ``label`` takes the names of the
    data's primary head."""
    known = dict(description.class_names) if description else {}
    return fill_names(model_heads, known, next(iter(known.values()), []))
