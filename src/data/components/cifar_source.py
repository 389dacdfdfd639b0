"""Read CIFAR-10 and CIFAR-100 from torchvision's on-disk format, downloading them if allowed.

The files are the official "python version" pickles, extracted the way torchvision does it:

- ``<data_dir>/cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch``
  (dicts with ``b"data"``: uint8 ``(N, 3072)`` and ``b"labels"``) and ``batches.meta``
  (``b"label_names"``);
- ``<data_dir>/cifar-100-python/``: ``train``, ``test`` (``b"data"``, ``b"fine_labels"``,
  ``b"coarse_labels"``) and ``meta`` (``b"fine_label_names"``, ``b"coarse_label_names"``).

torchvision's ``CIFAR100`` class exposes only one label set; reading the pickles directly gives
both the 100 fine classes and the 20 coarse superclasses from the same official files.
"""

import logging
import pickle
import socket
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


class CIFARUnavailableError(RuntimeError):
    """The CIFAR files are missing or malformed and could not be obtained."""


@dataclass(frozen=True)
class CIFARFormat:
    """Where one CIFAR variant lives on disk and how its pickles are keyed.

    :param name: Human-readable name, used in messages.
    :param folder: Folder torchvision extracts the archive into, under ``data_dir``.
    :param archive: Name of the official archive (torchvision downloads it into ``data_dir``).
    :param train_files: Pickles of the official training split, in order.
    :param test_files: Pickles of the official test split.
    :param meta_file: Pickle with the class names.
    :param label_sets: ``{label_set: (labels_key, names_key)}`` for every label set the files hold.
    :param sizes: Official ``(train, test)`` sizes.
    :param torchvision_class: Name of the ``torchvision.datasets`` class that downloads it.
    """

    name: str
    folder: str
    archive: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_sets: dict[str, tuple[str, str]] = field(default_factory=dict)
    sizes: tuple[int, int] = (50_000, 10_000)
    torchvision_class: str = ""

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the variant needs."""
        return (*self.train_files, *self.test_files, self.meta_file)


CIFAR10 = CIFARFormat(
    name="CIFAR-10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_sets={"class": ("labels", "label_names")},
    torchvision_class="CIFAR10",
)
CIFAR100 = CIFARFormat(
    name="CIFAR-100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_sets={
        "fine": ("fine_labels", "fine_label_names"),
        "coarse": ("coarse_labels", "coarse_label_names"),
    },
    torchvision_class="CIFAR100",
)
IMAGE_SHAPE = (3, 32, 32)


def _plain(value: Any) -> Any:
    """Decode bytes (Python 2 pickles read with ``encoding="bytes"``) into ``str``."""
    if isinstance(value, bytes):
        return value.decode("latin1")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# The only globals a CIFAR pickle refers to: numpy's array reconstruction (and the codec that
# protocol-2 pickles use for bytes). Anything else could run code, so it is refused.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CIFARUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals CIFAR files use."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve allowed globals; anything else means the file is not a CIFAR pickle."""
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which CIFAR files never do"
            )
        return super().find_class(module, name)


def _delete_advice(path: Path) -> str:
    return (
        f"Delete {path.parent} (and the archive next to it, if any) so it is extracted or "
        "downloaded again (data.download=true)."
    )


def read_pickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle with ``str`` keys, whether it holds bytes or ``str`` keys.

    :raises CIFARUnavailableError: if the file is truncated, not a pickle, or not a CIFAR dict.
    """
    try:
        with open(path, "rb") as f:
            content = _CIFARUnpickler(f, encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - EOFError, UnpicklingError, ValueError, ...
        raise CIFARUnavailableError(
            f"{path} is truncated or not a CIFAR pickle ({type(err).__name__}: {err}). "
            f"{_delete_advice(path)}"
        ) from err
    if not isinstance(content, dict):
        raise CIFARUnavailableError(
            f"{path} is not a CIFAR pickle (holds a {type(content).__name__}, not a dict). "
            f"{_delete_advice(path)}"
        )
    return {_plain(k): (v if _plain(k) == "data" else _plain(v)) for k, v in content.items()}


def missing_files(data_dir: str | Path, fmt: CIFARFormat) -> list[Path]:
    """Files of ``fmt`` not present under ``data_dir``."""
    folder = Path(data_dir) / fmt.folder
    return [folder / name for name in fmt.files if not (folder / name).is_file()]


def _extract_archive(archive: Path, data_dir: Path) -> None:
    """Unpack a local copy of the official archive (what torchvision would download)."""
    log.info(f"Extracting {archive} into {data_dir}...")
    with tarfile.open(archive) as tar:
        tar.extractall(data_dir, filter="data")


def _torchvision_download(data_dir: Path, fmt: CIFARFormat, timeout: float = 30.0) -> None:
    """torchvision's own download (checks the archive's MD5, then extracts it)."""
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, fmt.torchvision_class)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # fail fast on machines without internet
    try:
        dataset_class(str(data_dir), train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def ensure_cifar(data_dir: str | Path, fmt: CIFARFormat, download: bool = True) -> Path:
    """Return the folder holding the files of ``fmt``, extracting or downloading them if needed.

    Order: files already extracted; the official archive lying in ``data_dir``; torchvision's
    download (only with ``download=True``).

    :raises CIFARUnavailableError: with the missing files and how to provide them.
    """
    data_dir = Path(data_dir)
    folder = data_dir / fmt.folder
    if not missing_files(data_dir, fmt):
        return folder
    archive = data_dir / fmt.archive
    if archive.is_file():
        _extract_archive(archive, data_dir)
        if not missing_files(data_dir, fmt):
            return folder
    how_to = (
        f"Fix: connect to the internet and set data.download=true, or download "
        f"https://www.cs.toronto.edu/~kriz/{fmt.archive} on another machine and copy it (or its "
        f"extracted folder {fmt.folder}/) into {data_dir}, or point data.data_dir at a folder "
        f"that holds {fmt.folder}/."
    )
    if fmt is CIFAR10:
        how_to += " An image-folder copy of CIFAR-10 also works: data=cifar10_jpeg."
    missing = ", ".join(p.name for p in missing_files(data_dir, fmt))
    searched = f"no {fmt.archive} in {data_dir} either"
    if not download:
        raise CIFARUnavailableError(
            f"{fmt.name} files are missing from {folder} ({missing}; {searched}) and "
            f"downloading is disabled (data.download=false). {how_to}"
        )
    try:
        log.info(f"Downloading {fmt.name} into {data_dir} with torchvision...")
        data_dir.mkdir(parents=True, exist_ok=True)
        _torchvision_download(data_dir, fmt)
    except Exception as err:  # noqa: BLE001 - any network/IO failure gets the same advice
        raise CIFARUnavailableError(
            f"{fmt.name} is not in {folder} ({missing}; {searched}) and the torchvision "
            f"download failed ({type(err).__name__}: {err}); is this machine offline? {how_to}"
        ) from err
    if missing_files(data_dir, fmt):
        raise CIFARUnavailableError(
            f"torchvision finished but {fmt.name} files are still missing from {folder}. {how_to}"
        )
    return folder


def load_cifar_split(
    folder: str | Path, fmt: CIFARFormat, train: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Read one official split as uint8 images ``(N, 3, 32, 32)`` and ``{label_set: labels}``.

    :param folder: The extracted folder (``cifar-10-batches-py`` or ``cifar-100-python``).
    :param fmt: :data:`CIFAR10` or :data:`CIFAR100`.
    :param train: Official training split (``True``) or test split.
    """
    folder = Path(folder)
    images, labels = [], {name: [] for name in fmt.label_sets}
    for name in fmt.train_files if train else fmt.test_files:
        path = folder / name
        batch = read_pickle(path)
        data = np.asarray(batch.get("data"), dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != int(np.prod(IMAGE_SHAPE)):
            raise CIFARUnavailableError(
                f"{path}: 'data' must be uint8 rows of 3072 pixels, got shape {data.shape}. "
                f"{_delete_advice(path)}"
            )
        images.append(torch.from_numpy(data.reshape(-1, *IMAGE_SHAPE).copy()))
        for label_set, (key, _names) in fmt.label_sets.items():
            if key not in batch or len(batch[key]) != len(data):
                raise CIFARUnavailableError(
                    f"{path}: expected {len(data)} '{key}' entries, found "
                    f"{len(batch.get(key, []))}. {_delete_advice(path)}"
                )
            labels[label_set].append(torch.as_tensor(batch[key], dtype=torch.int64))
    return torch.cat(images), {k: torch.cat(v) for k, v in labels.items()}


def load_class_names(folder: str | Path, fmt: CIFARFormat) -> dict[str, list[str]]:
    """``{label_set: class names}`` from the meta pickle."""
    path = Path(folder) / fmt.meta_file
    meta = read_pickle(path)
    missing = [names for _k, names in fmt.label_sets.values() if names not in meta]
    if missing:
        raise CIFARUnavailableError(
            f"{path} lacks {missing} (it holds {sorted(meta)}); it is not the {fmt.name} meta "
            f"file. {_delete_advice(path)}"
        )
    return {label_set: list(meta[names]) for label_set, (_k, names) in fmt.label_sets.items()}
