"""Hugging Face ``datasets``: a hub id, a local folder or data files (``data=hf``).

``data.path`` may be

- a hub id (``ylecun/mnist``, with ``data.name`` for a configuration), loaded by
  ``load_dataset`` into ``<data_dir>/hf`` (nothing is written elsewhere);
- a local folder: parquet/arrow/csv/json files with images, or an ``imagefolder`` layout
  (``load_dataset(folder)``), or a folder written by ``save_to_disk`` (``load_from_disk``);
- a packaged builder (``parquet``, ``csv``, ``imagefolder`` ...) with ``data.data_files``
  (``{train: a.parquet, test: b.parquet}``) or a single data file (``train.parquet``).

Dataset loading scripts are refused and ``trust_remote_code`` is never passed: a dataset is
data, never code. The splits ``train``, ``validation`` (or ``valid``, ``val``, ``dev``) and
``test`` are used as such; ``data.splits`` maps them explicitly. Example::

    python src/train.py data=hf data.path=/path/to/parquet_folder model=timm \\
        model.net.model_name=resnet18
"""

import socket
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.components.hf_images import ImageCells, decode_cells
from src.data.components.sources import ImageConverter, Source, SourceError
from src.data.source_datamodule import SourceDataModule

INSTALL_HINT = 'pip install -e ".[hf]" (or make install)'
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "val": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing"),
}
IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels", "fine_label")
# data.path given as one file: the packaged builder that reads it.
FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json"}
FILE_BUILDERS |= {".jsonl": "json", ".tsv": "csv"}
READ_BATCH = 1024  # rows decoded per step: batched arrow access, bounded memory


def import_datasets() -> Any:
    """The ``datasets`` package, or one error saying how to install it."""
    try:
        import datasets
    except ImportError as err:
        raise SourceError(
            f"data=hf needs the Hugging Face datasets package: {INSTALL_HINT}."
        ) from err
    return datasets


class HFSplit(Dataset):
    """``(image, label)`` pairs of one split, read one row at a time (``in_memory=false``)."""

    def __init__(self, data: Any, cells: ImageCells, label_column: str, label_map: dict | None):
        self.data, self.cells = data, cells
        self.label_column, self.label_map = label_column, label_map

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = self.data[i]
        label = row[self.label_column]
        return self.cells.decode(row[self.cells.column]), int(
            self.label_map[label] if self.label_map else label
        )


class HFSource(Source):
    """One Hugging Face dataset (``DatasetDict``) as a :class:`Source`.

    :param path: Hub id, local folder, ``save_to_disk`` folder, builder name or data file.
    :param name: The dataset's configuration (``load_dataset(path, name)``).
    :param data_files: Files per split, e.g. ``{"train": "a.parquet", "test": "b.parquet"}``.
    :param splits: ``{train, val, test}`` -> the dataset's split names; overrides detection.
    :param image_column: Column of the images (default: ``image``/``img``, else the first
        ``Image`` feature).
    :param label_column: Column of the labels (default: ``label``/``labels``/``fine_label``,
        else the first ``ClassLabel``).
    :param class_names: Names in label order (default: the ``ClassLabel``'s, else numbers).
    :param cache_dir: Hugging Face's own cache (downloads, arrow files).
    :param load_kwargs: Other ``load_dataset`` arguments.
    :param max_image_pixels: Largest width x height decoded (read from the header first).
    :param hub_timeout: Seconds to wait for the hub before a hub id fails; ``None``: no check
        (the ``datasets`` library's own retries, about 25 s offline).
    """

    def __init__(
        self,
        path: str,
        name: str | None = None,
        data_files: Any = None,
        splits: Mapping[str, str] | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        class_names: Sequence[str] | None = None,
        cache_dir: str | Path | None = None,
        load_kwargs: Mapping[str, Any] | None = None,
        max_image_pixels: int | None = None,
        hub_timeout: float | None = 10.0,
    ) -> None:
        self.path, self.config_name = str(path), name
        self.hub_timeout = hub_timeout
        self.name = (
            "hf-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in self.path)[-60:]
        )
        self.dataset = self._open(data_files, cache_dir, dict(load_kwargs or {}))
        self.mapping = self._map_splits(dict(splits or {}))
        features = self.dataset[self.mapping["train"]].features
        self.image_column = self._column(features, image_column, IMAGE_COLUMNS, "Image", "image")
        self.label_column = self._column(
            features, label_column, LABEL_COLUMNS, "ClassLabel", "label"
        )
        for role, split in self.mapping.items():  # every split must have both columns
            missing = {self.image_column, self.label_column} - set(self.dataset[split].features)
            if missing:
                raise SourceError(
                    f"The {split} split ({role}) lacks the columns {sorted(missing)}; it has "
                    f"{list(self.dataset[split].features)}. Choose splits with data.splits."
                )
        roots = image_roots(self.path, data_files, load_kwargs, cache_dir)
        self.cells = ImageCells(
            self.image_column, features[self.image_column], max_image_pixels, roots
        )
        self._class_names = [str(c) for c in class_names] if class_names else None
        self._label_map: dict | None = None
        self._init_labels(features[self.label_column])

    # ------------------------------------------------------------ opening
    def _open(self, data_files: Any, cache_dir: str | Path | None, kwargs: dict) -> Any:
        datasets = import_datasets()
        if "trust_remote_code" in kwargs:
            raise SourceError(
                "data.kwargs.trust_remote_code is not accepted: data=hf never runs a dataset's "
                "code. Use a dataset stored as data (parquet, arrow, images)."
            )
        local = Path(self.path).expanduser()
        script = local if local.suffix == ".py" else local / f"{local.name}.py"
        if script.is_file() or local.suffix == ".py":
            raise SourceError(
                f"data.path={self.path} is a dataset loading script ({script}); scripts are "
                "code and are not run. Convert the dataset to parquet or save_to_disk files."
            )
        cache = str(cache_dir) if cache_dir else None
        if local.is_dir() and not data_files and is_saved_dataset(local):
            return as_dict(datasets, datasets.load_from_disk(str(local)), self.path)
        path = self.path
        if local.is_file() and not data_files:  # one data file: its builder reads it
            if local.suffix not in FILE_BUILDERS:
                raise SourceError(
                    f"data.path={self.path}: cannot tell the format of this file; use one of "
                    f"{sorted(FILE_BUILDERS)}, a folder, or data.path=<builder> data.data_files=."
                )
            path, data_files = FILE_BUILDERS[local.suffix], {"train": str(local)}
        elif not local.exists() and looks_local(self.path):
            raise SourceError(
                f"data.path={self.path}: no such file or folder. Give a local dataset folder, a "
                "file written by to_parquet, a save_to_disk folder, or a hub id (owner/name)."
            )
        if not local.exists() and path not in datasets.packaged_modules._PACKAGED_DATASETS_MODULES:
            check_hub_reachable(self.path, self.hub_timeout)
        try:
            loaded = datasets.load_dataset(
                path, name=self.config_name, data_files=data_files, cache_dir=cache, **kwargs
            )
        except ConnectionError as err:
            raise SourceError(
                f"data.path={self.path}: not a local folder or file, and the Hugging Face hub is "
                f"unreachable ({err}). Use a local "
                "copy: on a machine with network, datasets.load_dataset(...).save_to_disk(folder) "
                "(or download the parquet files), then data.path=<that folder>."
            ) from err
        except (FileNotFoundError, ValueError) as err:
            raise SourceError(f"data.path={self.path}: {err}") from err
        except RuntimeError as err:
            if "script" in str(err).lower():
                raise SourceError(
                    f"data.path={self.path} is a dataset loading script; scripts are code and are "
                    "not run. Use a parquet version of the dataset (most hub datasets have one)."
                ) from err
            raise
        return as_dict(datasets, loaded, self.path)

    def _map_splits(self, given: dict[str, str]) -> dict[str, str]:
        """``{train, test[, val]}`` -> the dataset's split names."""
        found = list(self.dataset)
        unknown_keys = sorted(set(given) - set(SPLIT_ALIASES))
        if unknown_keys:
            raise SourceError(
                f"data.splits has keys {unknown_keys}; its keys are train, val and test, e.g. "
                "data.splits={train: train, val: validation, test: test}."
            )
        mapping = {}
        for role, aliases in SPLIT_ALIASES.items():
            if role in given:
                if given[role] is None:
                    continue  # e.g. val: null -> split val_size off the training split
                if given[role] not in found:
                    raise SourceError(
                        f"data.splits.{role}={given[role]}: no such split; {self.path} has {found}."
                    )
                mapping[role] = given[role]
                continue
            match = next((s for s in found if s.lower() in aliases), None)
            if match is not None:
                mapping[role] = match
        for role in ("train", "test"):
            if role not in mapping:
                raise SourceError(
                    f"{self.path} has the splits {found} but no {role} split; say which to use, "
                    f"e.g. data.splits={{train: {found[0]}, test: <split name>}}."
                )
        return mapping

    @staticmethod
    def _column(
        features: Mapping[str, Any], given: str | None, names: Sequence[str], kind: str, key: str
    ) -> str:
        """The configured column, or the first of ``names``, or the first ``kind`` feature."""
        columns = list(features)
        if given is not None:
            if given not in features:
                raise SourceError(
                    f"data.{key}_column={given}: no such column; the dataset has {columns}."
                )
            return given
        found = next((c for c in names if c in features), None)
        found = found or next((c for c, f in features.items() if type(f).__name__ == kind), None)
        if found is None:
            raise SourceError(
                f"No {key} column found among {columns}; set data.{key}_column=<column>."
            )
        return found

    def _init_labels(self, feature: Any) -> None:
        """Class names from a ``ClassLabel``; string labels get sorted names; else numbers."""
        if type(feature).__name__ == "ClassLabel":
            self._feature_names = list(feature.names)
            return
        self._feature_names = None
        dtype = str(getattr(feature, "dtype", ""))
        if dtype in ("string", "large_string"):
            values = set()
            for split in self.mapping.values():
                values.update(self.dataset[split].unique(self.label_column))
            names = sorted(str(v) for v in values)
            self._label_map = {v: names.index(v) for v in names}
            self._feature_names = names
        elif not dtype.startswith(("int", "uint")):
            raise SourceError(
                f"The label column {self.label_column} holds {feature}; labels must be integers, "
                "strings or a ClassLabel. Set data.label_column to the label column."
            )

    # ------------------------------------------------------------ Source API
    def split_names(self) -> list[str]:
        return list(self.mapping)

    def _data(self, name: str) -> Any:
        return self.dataset[self.mapping[name]]

    def split(self, name: str) -> HFSplit:
        data = self._data(name).select_columns([self.image_column, self.label_column])
        return HFSplit(self.cells.raw(data), self.cells, self.label_column, self._label_map)

    def read_split(self, name: str, convert: ImageConverter) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched: rows come as arrow batches and encoded images are decoded from their
        bytes (torchvision's decoders), never one ``__getitem__`` per image."""
        data = self._data(name).select_columns([self.image_column, self.label_column])
        return decode_cells(
            data, self.cells, self.label_column, self._label_map, convert, name, READ_BATCH
        )

    def class_names(self) -> list[str]:
        if self._class_names is None:
            if self._feature_names is not None:
                self._class_names = list(self._feature_names)
            else:
                columns = [self.labels_of(s) for s in self.mapping]
                top = max(int(c.max()) if c.size else 0 for c in columns)
                self._class_names = [str(i) for i in range(int(top) + 1)]
        return self._class_names

    def labels_of(self, name: str) -> np.ndarray:
        """The label column of one split as a numpy array (no image is decoded)."""
        data = self._data(name).select_columns([self.label_column]).with_format("numpy")
        return np.asarray(data[:][self.label_column])

    def fingerprint(self) -> str:
        splits = [
            f"{role}={split}:{self._data(role)._fingerprint}"
            for role, split in self.mapping.items()
        ]
        given = self._class_names if self._feature_names is None else None
        return (
            f"{'|'.join(splits)}|{self.image_column}|{self.label_column}|{given}|{self.cells.limit}"
        )


def is_saved_dataset(folder: Path) -> bool:
    """Whether ``folder`` was written by ``save_to_disk`` (a dataset or a dataset dict)."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def check_hub_reachable(path: str, timeout: float | None) -> None:
    """Fail in ``timeout`` seconds, naming the hub and the fix, when hub id ``path`` cannot be
    fetched because the hub is unreachable (the library would retry for about 25 s).

    Skipped when ``timeout`` is ``None``, ``HF_HUB_OFFLINE`` is set (then the cache answers) or
    a proxy is configured (the hub is then reached through it, not directly).
    """
    import huggingface_hub.constants as hub

    url = urllib.parse.urlsplit(hub.ENDPOINT)
    proxies = urllib.request.getproxies()
    if timeout is None or hub.HF_HUB_OFFLINE or proxies.get(url.scheme) or proxies.get("all"):
        return
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as err:
        raise SourceError(
            f"data.path={path} is a Hugging Face hub id, and the hub ({hub.ENDPOINT}) did not "
            f"answer within data.hub_timeout={timeout} s ({err}). Offline: give a local copy "
            "(on a machine with network, datasets.load_dataset(...).save_to_disk(folder), then "
            "data.path=<that folder>), or set HF_HUB_OFFLINE=1 if it is in the Hugging Face cache."
        ) from err


def image_roots(
    path: str, data_files: Any, load_kwargs: Mapping[str, Any] | None, cache_dir: Any
) -> list[Path]:
    """The folders the user named: where images stored by path alone may be read from.

    ``data.path`` (a folder, or a file's folder), the folders of ``data.data_files`` (up to the
    first wildcard), ``data.kwargs.data_dir`` and the Hugging Face cache.
    """
    named: list[Any] = [path, (load_kwargs or {}).get("data_dir"), cache_dir]
    files = data_files.values() if isinstance(data_files, Mapping) else [data_files]
    for entry in files:
        named.extend([entry] if entry is None or isinstance(entry, str | Path) else list(entry))
    roots = []
    for item in map(str, filter(None, named)):
        if "://" in item:
            continue
        fixed = item.split("*")[0].split("?")[0]  # a glob's folder is what precedes its wildcard
        folder = Path(fixed if fixed == item or fixed.endswith("/") else Path(fixed).parent)
        folder = folder.expanduser()
        if folder.is_file():
            folder = folder.parent
        if folder.is_dir():  # a hub id names no local folder
            roots.append(folder)
    return roots


def looks_local(path: str) -> bool:
    """A path rather than a hub id (``owner/name`` or ``name``)."""
    return path.startswith((".", "/", "~")) or path.count("/") > 1 or "\\" in path


def as_dict(datasets: Any, loaded: Any, path: str) -> Any:
    """A ``DatasetDict``: a single ``Dataset`` is its ``train`` split."""
    if isinstance(loaded, datasets.Dataset):
        return datasets.DatasetDict({"train": loaded})
    if not isinstance(loaded, datasets.DatasetDict):
        raise SourceError(
            f"data.path={path} loaded a {type(loaded).__name__}; data=hf needs a map-style "
            "dataset (no data.kwargs.streaming: the splits are decoded into memory or read by index)."
        )
    return loaded


class HFDataModule(SourceDataModule):
    """``data=hf``: a Hugging Face dataset on the in-memory pipeline.

    :param path: Hub id, local folder, ``save_to_disk`` folder, builder name or data file.
    :param name: The dataset's configuration name.
    :param data_files: Files per split (with a builder ``path`` such as ``parquet``).
    :param splits: ``{train, val, test}`` -> split names; default: detected.
    :param image_column: Image column (default: detected).
    :param label_column: Label column (default: detected).
    :param class_names: Names in label order (default: the ``ClassLabel``'s, else numbers).
    :param hf_cache_dir: Hugging Face's cache (default ``<data_dir>/hf``).
    :param kwargs: Other ``load_dataset`` arguments (``revision``, ``streaming`` is not supported).
    :param max_image_pixels: Largest width x height decoded; ``None``: no limit.
    :param hub_timeout: Seconds to wait for the hub before a hub id fails; ``None``: no check.
    :param datamodule_kwargs: Everything else of
        :class:`~src.data.source_datamodule.SourceDataModule`.
    """

    def __init__(
        self,
        path: str,
        name: str | None = None,
        data_files: Any = None,
        splits: Mapping[str, str] | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        class_names: Sequence[str] | None = None,
        hf_cache_dir: str | None = None,
        kwargs: Mapping[str, Any] | None = None,
        max_image_pixels: int | None = 64_000_000,
        hub_timeout: float | None = 10.0,
        **datamodule_kwargs: Any,
    ) -> None:
        super().__init__(**datamodule_kwargs)

    def open_source(self) -> HFSource:
        hp = self.hparams
        return HFSource(
            hp.path,
            name=hp.name,
            data_files=hp.data_files,
            splits=hp.splits,
            image_column=hp.image_column,
            label_column=hp.label_column,
            class_names=hp.class_names,
            cache_dir=hp.hf_cache_dir or Path(hp.data_dir) / "hf",
            load_kwargs=hp.kwargs,
            max_image_pixels=hp.max_image_pixels,
            hub_timeout=hp.hub_timeout,
        )
