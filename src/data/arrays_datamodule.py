"""Numpy arrays in one ``.npz`` file: ``x_train``, ``y_train``, ``x_test``, ``y_test``.

Optional ``x_val``/``y_val`` (then the validation split) and ``class_names`` (strings). Images
may be ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``, uint8 0-255 or float in [0, 1]. The
file is read with ``allow_pickle=False``: an array of Python objects is refused, never
unpickled. Example::

    np.savez("my_data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    python src/train.py data=arrays data.path=my_data.npz
"""

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.components.sources import ImageConverter, Source, SourceError, to_uint8
from src.data.source_datamodule import SourceDataModule

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
CHANNELS = (1, 3, 4)


def to_nchw(x: np.ndarray, key: str) -> torch.Tensor:
    """``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` as a uint8 ``(N, C, H, W)`` tensor."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif t.ndim == 4 and t.shape[-1] in CHANNELS and t.shape[1] not in CHANNELS:
        t = t.permute(0, 3, 1, 2)
    if t.ndim != 4 or t.shape[1] not in CHANNELS:
        raise SourceError(
            f"{key} has shape {tuple(x.shape)}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) "
            f"with C in {CHANNELS}."
        )
    try:
        return to_uint8(t)
    except SourceError as err:
        raise SourceError(f"{key}: {err}") from err


class ArraySplit(Dataset):
    """``(image (C, H, W) uint8, label)`` pairs of one split."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


class ArraySource(Source):
    """The arrays of one ``.npz`` file.

    :param path: The ``.npz`` file.
    :param class_names: Names in label order; default: the file's ``class_names`` array, else
        ``"0" ... "n-1"`` for the labels found.
    """

    def __init__(self, path: str | Path, class_names: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.name = f"arrays-{self.path.stem}"
        if not self.path.is_file():
            raise SourceError(
                f"data.path={path}: no such file. Give an .npz with arrays {', '.join(REQUIRED)} "
                "(np.savez('data.npz', x_train=..., y_train=..., x_test=..., y_test=...))."
            )
        try:
            self.arrays = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise SourceError(f"data.path={path} is not a readable .npz file: {err}") from err
        missing = [k for k in REQUIRED if k not in self.arrays.files]
        if missing:
            raise SourceError(
                f"{path} lacks the arrays {missing} (it has {sorted(self.arrays.files)}); an .npz "
                f"for data=arrays holds {', '.join(REQUIRED)} (optional x_val, y_val, class_names)."
            )
        self._class_names = list(class_names) if class_names else None
        self._splits: dict[str, ArraySplit] = {}

    def split_names(self) -> list[str]:
        has_val = "x_val" in self.arrays.files and "y_val" in self.arrays.files
        return ["train", "test", *(["val"] if has_val else [])]

    def _read(self, key: str) -> np.ndarray:
        try:
            return self.arrays[key]
        except ValueError as err:  # object arrays would need pickle
            raise SourceError(
                f"{self.path}: array {key} holds Python objects, which are not loaded (they "
                "could run code). Save numbers (and class_names as strings) instead."
            ) from err

    def split(self, name: str) -> ArraySplit:
        if name not in self._splits:
            x, y = self._read(f"x_{name}"), self._read(f"y_{name}")
            images = to_nchw(x, f"x_{name}")
            labels = np.asarray(y)
            if labels.ndim != 1 or len(labels) != len(images) or labels.dtype.kind not in "iu":
                raise SourceError(
                    f"{self.path}: y_{name} must be {len(images)} integer labels (one per image of "
                    f"x_{name}); got {labels.dtype} {labels.shape}."
                )
            self._splits[name] = ArraySplit(images, torch.from_numpy(labels.astype(np.int64)))
        return self._splits[name]

    def read_split(self, name: str, convert: ImageConverter) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.split(name)
        return convert.batch(data.images), data.labels

    def class_names(self) -> list[str]:
        if self._class_names is None and "class_names" in self.arrays.files:
            self._class_names = [str(c) for c in self._read("class_names").tolist()]
        if self._class_names is None:
            top = max(int(self.split(s).labels.max()) for s in self.split_names())
            self._class_names = [str(i) for i in range(top + 1)]
        return self._class_names

    def fingerprint(self) -> str:
        stat = os.stat(self.path)
        return f"{self.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self._class_names}"


class ArraysDataModule(SourceDataModule):
    """``data=arrays``: an ``.npz`` of numpy arrays on the in-memory pipeline.

    :param path: The ``.npz`` file.
    :param class_names: Class names in label order (default: the file's, else numbers).
    :param kwargs: Everything else of :class:`~src.data.source_datamodule.SourceDataModule`.
    """

    def __init__(self, path: str, class_names: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def open_source(self) -> ArraySource:
        return ArraySource(self.hparams.path, self.hparams.class_names)
