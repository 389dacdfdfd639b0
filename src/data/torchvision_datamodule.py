"""Any ``torchvision.datasets`` image-classification class by name: ``data=torchvision``.

Example::

    python src/train.py data=torchvision data.dataset=FashionMNIST model=cnn
    python src/train.py data=torchvision data.dataset=EMNIST +data.kwargs.split=balanced
    python src/train.py data=torchvision data.dataset=Flowers102 data.image_size=64 data.channels=3

The class is looked up by name in ``torchvision.datasets`` (nothing else is imported). Its train
and test split are chosen through the constructor: ``train=True/False`` (MNIST family, CIFAR,
EMNIST, QMNIST, USPS) or ``split=`` (``train``/``trainval`` and ``test``; ``val`` becomes the
validation split where the class has one, e.g. Flowers102, DTD). ``data.kwargs`` go to the
constructor as they are. Classes that hold their images as one array (MNIST family, CIFAR,
SVHN, STL10) are converted in one go; the others are read sample by sample.
"""

import difflib
import hashlib
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.datasets as tv_datasets
from torch.utils.data import Dataset

from src.data.components.sources import ImageConverter, Source, SourceError
from src.data.source_datamodule import SourceDataModule

#: ``split=`` values where a class's are not ``train`` and ``test``; ``val`` where it has one.
SPLITS: dict[str, dict[str, str]] = {
    **{
        name: {"train": "train", "val": "val", "test": "test"}
        for name in ("Flowers102", "DTD", "PCAM", "FGVCAircraft", "RenderedSST2")
    },
    "Country211": {"train": "train", "val": "valid", "test": "test"},
    "OxfordIIITPet": {"train": "trainval", "test": "test"},
    # Their test images carry no labels: the validation split is the test split.
    "ImageNet": {"train": "train", "test": "val"},
    "Imagenette": {"train": "train", "test": "val"},
    "Places365": {"train": "train-standard", "test": "val"},
}
DEFAULT_SPLITS = {"train": "train", "test": "test"}
#: Constructor arguments the datamodule sets (or refuses), and what to use instead.
RESERVED = {
    "root": "data.data_dir",
    "download": "data.download",
    "train": "data.splits (train/test are chosen per split)",
    "transform": "data.augment / data.normalize",
    "target_transform": "nothing (labels are used as the class gives them)",
    "transforms": "data.augment / data.normalize",
    "loader": "nothing (images are read by the class's default loader)",
}
PLAIN = (str, int, float, bool, type(None))


def dataset_names() -> list[str]:
    """The dataset classes of ``torchvision.datasets``."""
    names = []
    for name in tv_datasets.__all__:
        obj = getattr(tv_datasets, name, None)
        if inspect.isclass(obj) and issubclass(obj, Dataset):
            names.append(name)
    return names


def dataset_class(name: Any) -> type:
    """The class ``torchvision.datasets.<name>``; anything else is an error naming close names."""
    names = dataset_names()
    if isinstance(name, str) and name in names:
        return getattr(tv_datasets, name)
    text = str(name)
    close = [n for n in names if n.lower() == text.lower()]
    close += difflib.get_close_matches(text, names, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
    raise SourceError(
        f"data.dataset={name!r} is not a dataset class of torchvision.datasets (give a class "
        f"name only, e.g. FashionMNIST, CIFAR10, SVHN, Flowers102).{hint}"
    )


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``cls(...)``, following ``**kwargs`` up to the parent classes
    (``EMNIST(root, split, **kwargs)`` passes ``train`` on to ``MNIST``)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        forwards = False
        for p in list(inspect.signature(init).parameters.values())[1:]:
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif p.kind is not inspect.Parameter.VAR_POSITIONAL:
                params.setdefault(p.name, p)
        if not forwards:
            break
    return params


def _check_plain(value: Any, key: str) -> None:
    """Constructor arguments are plain config values (no objects, nothing instantiated)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_plain(v, f"{key}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{key}[{i}]")
    elif not isinstance(value, PLAIN):
        raise SourceError(f"{key} is a {type(value).__name__}; give plain values only.")


class TorchvisionSource(Source):
    """One ``torchvision.datasets`` class: its splits, class names and files.

    :param dataset: Class name in ``torchvision.datasets``.
    :param root: The class's ``root`` folder.
    :param kwargs: Further constructor arguments (e.g. EMNIST's ``split``).
    :param download: Let the class download missing files.
    :param splits: ``{train, test[, val]: value of the class's split selector}``; ``None``: the
        class's usual ones.
    :param class_names: Names in label order; ``None``: the class's ``classes``, else numbers.
    """

    def __init__(
        self,
        dataset: str,
        root: str | Path,
        kwargs: Mapping[str, Any] | None = None,
        download: bool = False,
        splits: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.cls = dataset_class(dataset)
        self.dataset = self.cls.__name__
        self.root = Path(root)
        self.kwargs = dict(kwargs or {})
        self.download = bool(download)
        self.params = constructor_parameters(self.cls)
        self.selector = "train" if "train" in self.params else "split"
        self._check_kwargs()
        if self.selector not in self.params:
            raise SourceError(
                f"torchvision.datasets.{self.dataset} has no train/test split (its constructor "
                "takes neither train= nor split=); data=torchvision needs both. Put its images "
                "into train/ and test/ class folders and use data=image_folder."
            )
        self.selectors = self._selectors(splits)
        self._class_names = [str(c) for c in class_names] if class_names else None
        self._datasets: dict[str, Dataset] = {}
        digest = hashlib.sha1(json.dumps(self.kwargs, sort_keys=True).encode()).hexdigest()
        # "_", not "-": the decode cache replaces files named "<name>-*.pt" as stale.
        self.name = f"torchvision-{self.dataset}" + (f"_{digest[:8]}" if self.kwargs else "")

    def _check_kwargs(self) -> None:
        _check_plain(self.kwargs, "data.kwargs")
        for key in self.kwargs:
            if key in RESERVED or key == "split" and "train" not in self.params:
                use = RESERVED.get(key, "data.splits (train/test are chosen per split)")
                raise SourceError(f"data.kwargs.{key} is set by the datamodule; use {use} instead.")
            if key not in self.params:
                close = difflib.get_close_matches(key, list(self.params), n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise SourceError(
                    f"data.kwargs.{key}: torchvision.datasets.{self.dataset} takes no argument "
                    f"{key!r} (it takes {', '.join(self.params)}).{hint}"
                )
        chosen = {"root", "download", self.selector, *self.kwargs}
        missing = [
            n
            for n, p in self.params.items()
            if p.default is inspect.Parameter.empty and n not in chosen
        ]
        if missing:
            choices = getattr(self.cls, f"{missing[0]}s", None)  # e.g. EMNIST.splits
            values = f"one of {', '.join(choices)}" if isinstance(choices, tuple) else "..."
            raise SourceError(
                f"torchvision.datasets.{self.dataset} needs "
                f"{', '.join(f'data.kwargs.{m}' for m in missing)} (e.g. "
                f"+data.kwargs.{missing[0]}={choices[0] if isinstance(choices, tuple) else '...'}; "
                f"{missing[0]}: {values})."
            )

    def _selectors(self, splits: Mapping[str, Any] | None) -> dict[str, Any]:
        """``{train, test[, val]: constructor value}`` for this class."""
        if self.selector == "train":
            chosen = dict(splits or {"train": True, "test": False})
        else:
            chosen = dict(splits or SPLITS.get(self.dataset, DEFAULT_SPLITS))
        if not {"train", "test"} <= set(chosen) or not set(chosen) <= {"train", "val", "test"}:
            raise SourceError(
                f"data.splits={chosen} must map train and test (and optionally val) to values "
                f"of torchvision.datasets.{self.dataset}'s {self.selector}= argument."
            )
        return chosen

    # ------------------------------------------------------------ files
    def expected_files(self) -> tuple[Path, list[str]]:
        """The folder the class reads and the file names it expects there (empty when the class
        does not list them)."""
        cls, root = self.cls, self.root
        shell = cls.__new__(cls)  # reads folder properties without loading anything
        shell.root = str(root)
        if isinstance(getattr(cls, "raw_folder", None), property):  # MNIST family
            folder = Path(shell.raw_folder)
            if self.dataset == "EMNIST":
                split = self.kwargs.get("split")
                return folder, [
                    f"emnist-{split}-{s}-{kind}-ubyte"
                    for s in ("train", "test")
                    for kind in ("images-idx3", "labels-idx1")
                ]
            resources = getattr(cls, "resources", [])
            if isinstance(resources, Mapping):  # QMNIST: per subset
                resources = [r for s in ("train", "test") for r in resources.get(s, [])]
            names = [os.path.basename(url) for url, _ in resources]
            return folder, [os.path.splitext(n)[0] for n in names]
        if hasattr(cls, "train_list"):  # CIFAR, STL10
            names = [f for f, *_ in [*cls.train_list, *getattr(cls, "test_list", [])]]
            meta = getattr(cls, "meta", None)
            names += [meta["filename"]] if isinstance(meta, Mapping) else []
            return root / cls.base_folder, names
        if isinstance(getattr(cls, "split_list", None), Mapping):  # SVHN, USPS
            values = set(self.selectors.values())
            return root, [v[1] for k, v in cls.split_list.items() if k in values]
        base = getattr(cls, "base_folder", None)
        if isinstance(base, str):
            return root / base, []
        return own_folder(root, self.dataset), []

    def download_names(self) -> list[str]:
        """Names of the archives or files the class downloads, for messages about classes
        that do not list their unpacked files."""
        cls = self.cls
        found: list[Any] = [v for v in getattr(cls, "_file_dict", {}).values()]
        resources = getattr(cls, "_RESOURCES", ())
        found += list(resources.values()) if isinstance(resources, Mapping) else list(resources)
        found += [getattr(cls, key) for key in ("_URL", "url", "filename") if hasattr(cls, key)]
        names = [v[0] if isinstance(v, tuple | list) else v for v in found]
        return list(dict.fromkeys(os.path.basename(n) for n in names if isinstance(n, str)))

    def _file_stats(self) -> list[tuple[str, int, int]]:
        """``(name, size, mtime)`` of the dataset's files: the expected ones, or everything
        under its folder (hidden entries, such as the decode cache, left out)."""
        folder, names = self.expected_files()
        if names:
            paths = [folder / n for n in names]
        elif folder.is_dir():
            paths = []
            for parent, dirs, files in os.walk(folder):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                paths += [Path(parent, f) for f in sorted(files) if not f.startswith(".")]
        else:
            paths = []
        stats = []
        for path in paths:
            try:
                st = path.stat()
                stats.append((str(path.relative_to(folder)), st.st_size, st.st_mtime_ns))
            except OSError:
                stats.append((str(path.relative_to(folder)), -1, -1))
        return stats

    def fingerprint(self) -> str:
        stats = self._file_stats()
        if self.download and all(size < 0 for _, size, _ in stats):
            self.split("train")  # download first, so that the key describes the files
            stats = self._file_stats()
        return json.dumps(
            [self.dataset, self.kwargs, self.selectors, self._class_names, stats],
            sort_keys=True,
            default=str,
        )

    # ------------------------------------------------------------ splits
    def split_names(self) -> list[str]:
        return list(self.selectors)

    def split(self, name: str) -> Dataset:
        if name not in self._datasets:
            args = {**self.kwargs, self.selector: self.selectors[name]}
            if "download" in self.params:
                args["download"] = self.download
            self._datasets[name] = self._construct(args)
        return self._datasets[name]

    def _construct(self, args: dict[str, Any]) -> Dataset:
        where = f"torchvision.datasets.{self.dataset}(root={str(self.root)!r}, {args})"
        try:
            return self.cls(root=str(self.root), **args)
        except ImportError as err:
            raise SourceError(f"{where} needs a package that is not installed: {err}") from err
        except ValueError as err:  # e.g. a split value the class does not know
            raise SourceError(f"{where}: {err} (check data.kwargs and data.splits)") from err
        except (RuntimeError, OSError) as err:
            folder, names = self.expected_files()
            downloads = ", ".join(self.download_names()) or "see its documentation"
            files = (
                ", ".join(names) if names else f"the unpacked files of its download ({downloads})"
            )
            if args.get("download"):
                raise SourceError(
                    f"{where} could not download the dataset ({type(err).__name__}: {err}); is "
                    f"this machine offline? Download the files elsewhere and put them into "
                    f"{folder} ({files}), then run with data.download=false."
                ) from err
            how = (
                "or set data.download=true on a machine with internet access"
                if "download" in self.params
                else "(this class cannot download them itself)"
            )
            raise SourceError(
                f"torchvision.datasets.{self.dataset} found no readable dataset in {folder}: "
                f"expected {files} there (data.data_dir={self.root} is its root). Put the files "
                f"there, {how}. ({type(err).__name__}: {err})"
            ) from err

    def class_names(self) -> list[str]:
        if self._class_names is None:
            classes = getattr(self.split("train"), "classes", None)
            if classes and all(isinstance(c, str) for c in classes):
                self._class_names = list(classes)
            else:  # no names (SVHN, GTSRB): numbers for the labels found
                top = max(int(max(split_labels(self.split(s)))) for s in self.split_names())
                self._class_names = [str(i) for i in range(top + 1)]
        return self._class_names

    def read_split(self, name: str, convert: ImageConverter) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.split(name)
        arrays = array_split(data, convert)
        if arrays is not None:
            return convert.batch(arrays[0]), arrays[1]
        try:
            return super().read_split(name, convert)
        except (TypeError, ValueError) as err:  # e.g. a target that is a dict or a mask
            raise SourceError(
                f"torchvision.datasets.{self.dataset} ({name} split) does not yield (image, class "
                f"index) pairs: {err}. data=torchvision reads image-classification datasets; "
                "check data.kwargs (e.g. a target_type that gives class indices)."
            ) from err


def own_folder(root: Path, dataset: str) -> Path:
    """The subfolder of ``root`` named after the class (``flowers-102`` for Flowers102,
    ``oxford-iiit-pet`` for OxfordIIITPet, as most classes lay out their files), else ``root``."""

    def plain(name: str) -> str:
        return "".join(c for c in name.lower() if c.isalnum())

    found = []
    if root.is_dir():
        found = [
            p for p in root.iterdir() if p.is_dir() and plain(p.name).startswith(plain(dataset))
        ]
    return found[0] if len(found) == 1 else root


def split_labels(data: Dataset) -> list[int]:
    """Every label of a split, from the label list the class keeps, else sample by sample."""
    for key in ("targets", "labels", "_labels"):
        labels = getattr(data, key, None)
        if labels is not None and len(labels) == len(data):
            return [int(y) for y in np.asarray(labels).reshape(len(data), -1)[:, 0]]
    samples = getattr(data, "_samples", None)
    if isinstance(samples, list) and len(samples) == len(data):
        return [int(y) for _, y in samples]
    return [int(data[i][1]) for i in range(len(data))]


def array_split(data: Dataset, convert: ImageConverter) -> tuple[torch.Tensor, torch.Tensor] | None:
    """uint8 ``(N, C, H, W)`` and labels straight from a class that holds one image array
    (``.data`` with ``.targets`` or ``.labels``), or ``None`` when it does not. Checked against
    the class's own first sample, so a layout read wrongly falls back to per-sample reading."""
    images, labels = getattr(data, "data", None), getattr(data, "targets", None)
    labels = labels if labels is not None else getattr(data, "labels", None)
    if images is None or labels is None or not len(data):
        return None
    images = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        return None
    labels = torch.as_tensor(np.asarray(labels)).to(torch.int64)
    if labels.ndim == 2:  # QMNIST: a row of attributes per image, the class first
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != len(images) or images.ndim not in (3, 4):
        return None
    if images.ndim == 3:
        images = images.unsqueeze(1)
    elif images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4):
        images = images.permute(0, 3, 1, 2)  # NHWC -> NCHW
    first_image, first_label = data[0]
    try:
        same_label = int(first_label) == int(labels[0])
    except (TypeError, ValueError, RuntimeError):  # a target that is not one class index
        return None
    if not same_label or not torch.equal(convert(first_image), convert.batch(images[:1])[0]):
        return None
    return images, labels


class TorchvisionDataModule(SourceDataModule):
    """``data=torchvision``: a ``torchvision.datasets`` class on the in-memory pipeline.

    :param dataset: Class name in ``torchvision.datasets`` (``FashionMNIST``, ``SVHN``, ...).
    :param kwargs: Further constructor arguments (e.g. ``{split: balanced}`` for EMNIST).
    :param splits: ``{train, test[, val]: value of the class's train=/split= argument}``;
        ``None``: the class's usual train and test (and validation) splits.
    :param class_names: Names in label order; ``None``: the class's ``classes``, else numbers.
    :param download: Let the class download missing files (it needs internet access).
    :param options: Everything else of :class:`~src.data.source_datamodule.SourceDataModule`
        (``data_dir`` is the class's ``root``).
    """

    def __init__(
        self,
        dataset: str,
        kwargs: Mapping[str, Any] | None = None,
        splits: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        download: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(download=download, **options)
        self._source = self.open_source()  # checks the name and arguments now, reads no file

    def open_source(self) -> TorchvisionSource:
        return TorchvisionSource(
            self.hparams.dataset,
            self.hparams.data_dir,
            self.hparams.kwargs,
            download=self.hparams.download,
            splits=self.hparams.splits,
            class_names=self.hparams.class_names,
        )
