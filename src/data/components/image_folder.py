"""Class-per-folder image datasets: scan, decode once, cache the decoded tensors.

Layout: ``<root>/<split>/<class>/<image>`` (torchvision's ``ImageFolder`` layout per split).
Decoding JPEGs is the slow part of small-image training, so every split is decoded once into a
uint8 tensor and saved as a ``.pt`` file; the cache key is the folder path plus the name, size and
modification time of every image, so adding, removing or editing a file invalidates it.

Every file's width and height are read from its header before it is decoded, and a file larger
than ``max_pixels`` is refused: a small, highly compressed file can otherwise decode into
gigabytes.
"""

import hashlib
import logging
import os
import shutil
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

log = logging.getLogger(__name__)

Samples = list[tuple[str, int]]
CACHE_FORMAT = 1  # bump when the cached content changes meaning
# Largest image decoded: 64 megapixels is 192 MB as RGB uint8 (8000 x 8000), far above any
# training image and far below what a decompression bomb would allocate.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000


class ImageFolderError(RuntimeError):
    """An image folder is missing, empty or inconsistent."""


class ImageTooLargeError(ImageFolderError):
    """An image file's header announces more pixels than the configured limit."""


def check_image_pixels(
    path: str | Path, max_pixels: int | None, key: str = "data.max_image_pixels"
) -> tuple[int, int]:
    """Read only the header of ``path`` and refuse it if it has more than ``max_pixels``.

    :param path: Image file.
    :param max_pixels: Largest width x height allowed; ``None`` disables the check.
    :param key: The setting that raises the limit, named in the error.
    :return: ``(width, height)`` from the header.
    :raises ImageTooLargeError: if the image is larger than ``max_pixels``.
    :raises ImageFolderError: if the file is not an image Pillow can identify.
    """
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the check below replaces Pillow's own bomb guard
    try:
        with Image.open(path) as image:  # lazy: parses the header, decodes nothing
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageFolderError(f"Cannot read image {path}: {err}") from err
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"Image {path} is {width} x {height} (width x height) = {width * height:,} pixels, more "
            f"than the limit of {max_pixels:,} ({key}); refused before decoding. Shrink the image "
            f"or raise the limit, e.g. {key}={width * height}."
        )
    return width, height


def image_size_pair(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``None``, ``32`` or ``[h, w]`` as ``None`` or ``(h, w)``."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return (image_size, image_size)
    h, w = (int(s) for s in image_size)
    return (h, w)


def scan_split(
    folder: str | Path, class_to_idx: dict[str, int] | None = None
) -> tuple[list[str], Samples]:
    """List ``(path, class index)`` of every image under ``folder/<class>/``.

    :param folder: One split folder, e.g. ``root/train``.
    :param class_to_idx: Class indices to reuse (those of the training split) so that every split
        numbers classes the same way; ``None`` numbers the subfolders alphabetically.
    :return: ``(class names, samples)``.
    :raises ImageFolderError: if the folder, its class folders or its images are missing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFolderError(f"Image folder {folder} does not exist.")
    if class_to_idx is None:
        classes = list_classes(folder)
        class_to_idx = {c: i for i, c in enumerate(classes)}
    else:
        classes = list(class_to_idx)
        unknown = sorted(
            e.name for e in os.scandir(folder) if e.is_dir() and e.name not in class_to_idx
        )
        if unknown:
            raise ImageFolderError(
                f"{folder} has class folders the training split lacks: {unknown}."
            )
    samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise ImageFolderError(
            f"{folder} holds no images (looked for {', '.join(IMG_EXTENSIONS)} files in "
            f"{folder}/<class name>/)."
        )
    # A class folder without images is a mistake (a typo, a failed copy): in train/ the model
    # would get a class it never sees; in val/ or test/ the folder says images are missing.
    found = {target for _, target in samples}
    empty = [c for c in classes if class_to_idx[c] not in found and (folder / c).is_dir()]
    if empty:
        raise ImageFolderError(
            f"Class folder(s) {[f'{folder / c}/' for c in empty]} hold no images (looked for "
            f"{', '.join(IMG_EXTENSIONS)} files). Add images or remove the empty folder(s); "
            f"the classes with images are {sorted(c for c in classes if class_to_idx[c] in found)}."
        )
    return classes, samples


def list_classes(folder: str | Path) -> list[str]:
    """Class names of a split folder (its subfolders, sorted) without reading any image.

    :raises ImageFolderError: if ``folder`` is missing or has no class subfolders.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFolderError(f"Image folder {folder} does not exist.")
    try:
        return find_classes(str(folder))[0]
    except FileNotFoundError as err:
        raise ImageFolderError(
            f"{folder} has no class folders: expected {folder}/<class name>/<image files>."
        ) from err


def folder_fingerprint(folder: str | Path, samples: Samples, extra: str = "") -> str:
    """Hash of the folder path and every image's relative path, size and modification time."""
    folder = Path(folder).resolve()
    digest = hashlib.sha1(f"{CACHE_FORMAT}|{folder}|{extra}".encode())
    for path, target in samples:
        stat = os.stat(path)
        digest.update(
            f"{os.path.relpath(path, folder)}|{target}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()


def read_image(
    path: str, channels: int = 3, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> torch.Tensor:
    """Decode one image file into a uint8 ``(C, H, W)`` tensor (RGB, or grayscale for 1).

    :raises ImageTooLargeError: if its header announces more than ``max_pixels`` pixels.
    """
    check_image_pixels(path, max_pixels)
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    try:
        return decode_image(path, mode=mode)
    except RuntimeError as err:  # torchvision's message does not name the file
        raise ImageFolderError(f"Cannot decode image {path}: {err}") from err


def decode_images(
    paths: Sequence[str],
    image_size: tuple[int, int] | None = None,
    channels: int = 3,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> torch.Tensor:
    """Decode ``paths`` into one uint8 tensor ``(N, C, H, W)``, resizing where sizes differ.

    Without ``image_size`` every image must have the size of the first one.
    """
    images: torch.Tensor | None = None
    start, last_report = time.monotonic(), time.monotonic()
    for i, path in enumerate(paths):
        image = read_image(path, channels, max_pixels)
        if images is None:
            size = image_size or tuple(image.shape[-2:])
            images = torch.empty((len(paths), channels, *size), dtype=torch.uint8)
        if tuple(image.shape[-2:]) != tuple(images.shape[-2:]):
            if image_size is None:
                raise ImageFolderError(
                    f"{path} is {tuple(image.shape[-2:])} but earlier images are "
                    f"{tuple(images.shape[-2:])}; set data.image_size to resize them all."
                )
            image = TF.resize(image, list(image_size), antialias=True)
        images[i] = image
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            log.info(
                f"Decoded {i + 1}/{len(paths)} images ({(i + 1) / (last_report - start):.0f}/s)"
            )
    if images is None:
        raise ImageFolderError("No images to decode.")
    return images


def load_split_cached(
    folder: str | Path,
    class_to_idx: dict[str, int] | None = None,
    image_size: tuple[int, int] | None = None,
    channels: int = 3,
    cache_dir: str | Path | None = None,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images, labels and class names of one split, decoded once and cached.

    :param folder: Split folder (``root/train``, ``root/test`` or ``root/val``).
    :param class_to_idx: Class numbering to follow (that of the training split).
    :param image_size: ``(h, w)`` to resize to, or ``None`` to keep the (common) size.
    :param channels: 3 (RGB) or 1 (grayscale).
    :param cache_dir: Where decoded splits are stored; ``None`` disables the cache.
    :param max_pixels: Largest image (width x height) decoded, checked from each file's header.
    :return: ``(uint8 images (N, C, H, W), int64 labels (N,), class names)``.
    """
    classes, samples = scan_split(folder, class_to_idx)
    key = folder_fingerprint(folder, samples, extra=f"{image_size}|{channels}")
    cache_file = _cache_file(folder, key, cache_dir)
    if cache_file is not None:
        if cache_file.is_file():
            cached = torch.load(cache_file, weights_only=True)
            if cached.get("key") == key:
                log.info(f"Loaded decoded images of {folder} from {cache_file}")
                return cached["images"], cached["labels"], list(cached["classes"])
    log.info(f"Decoding {len(samples)} images of {folder} (once; cached afterwards)...")
    images = decode_images([p for p, _ in samples], image_size, channels, max_pixels)
    labels = torch.tensor([t for _, t in samples], dtype=torch.int64)
    if cache_file is not None:
        _save_cache(
            cache_file, {"key": key, "images": images, "labels": labels, "classes": classes}
        )
    return images, labels, classes


def cache_split(
    folder: str | Path,
    class_to_idx: dict[str, int] | None = None,
    image_size: tuple[int, int] | None = None,
    channels: int = 3,
    cache_dir: str | Path = ".decoded",
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[str]:
    """Decode and cache one split unless its cache is current; return its class names.

    Cheaper than :func:`load_split_cached` when the cache exists: nothing is loaded.
    """
    classes, samples = scan_split(folder, class_to_idx)
    key = folder_fingerprint(folder, samples, extra=f"{image_size}|{channels}")
    if not _cache_file(folder, key, cache_dir).is_file():
        load_split_cached(folder, class_to_idx, image_size, channels, cache_dir, max_pixels)
    return classes


def _cache_file(folder: str | Path, key: str, cache_dir: str | Path | None) -> Path | None:
    """``<cache_dir>/<split>-<key prefix>.pt``, or ``None`` without a cache."""
    if cache_dir is None:
        return None
    return Path(cache_dir) / f"{Path(folder).name}-{key[:20]}.pt"


def _save_cache(cache_file: Path, content: dict) -> None:
    """Write atomically (a half-written cache never looks valid); warn if the folder is read-only."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        for stale in cache_file.parent.glob(f"{cache_file.name.rsplit('-', 1)[0]}-*.pt"):
            stale.unlink()  # an older decoding of the same split
        partial = cache_file.with_suffix(".partial")
        torch.save(content, partial)
        partial.replace(cache_file)
        log.info(f"Cached decoded images in {cache_file}")
    except OSError as err:
        log.warning(f"Could not write the decode cache {cache_file} ({err}); decoding each run.")


def verify_sha256(path: str | Path, expected: str, key: str = "data.archive_sha256") -> None:
    """Raise :class:`ImageFolderError` unless the file's SHA-256 is ``expected`` (hex)."""
    expected = expected.strip().lower()
    with open(path, "rb") as f:
        found = hashlib.file_digest(f, "sha256").hexdigest()
    if found != expected:
        raise ImageFolderError(
            f"{path} has SHA-256 {found}, but {key}={expected}: the file is corrupted, "
            f"truncated or not the expected one. Replace it with the right file (or fix {key})."
        )


def extract_archive(archive: str | Path, target: str | Path, sha256: str | None = None) -> Path:
    """Extract an image-folder archive (``.tgz``, ``.tar.gz``, ``.tar``) into ``target`` once.

    The archive may hold the split folders at its top level or inside one folder
    (``cifar10-jpeg/train/...``); either way ``target/train`` is where ``train/`` ends up.
    Extraction goes to a temporary folder first, so an interrupted run leaves no half tree.

    :param sha256: Expected SHA-256 (hex) of the archive, checked before anything is extracted.
    """
    archive, target = Path(archive), Path(target)
    if (target / "train").is_dir():
        return target
    if not archive.is_file():
        raise ImageFolderError(f"Archive {archive} does not exist.")
    if sha256:
        verify_sha256(archive, sha256)
    staging = target.parent / f".{target.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log.info(f"Extracting {archive} into {target} (once)...")
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    candidates = [staging, *(p for p in staging.iterdir() if p.is_dir())]
    source = next((p for p in candidates if (p / "train").is_dir()), None)
    if source is None:
        shutil.rmtree(staging, ignore_errors=True)
        raise ImageFolderError(
            f"{archive} has no train/ folder at its top level or one level down."
        )
    target.mkdir(parents=True, exist_ok=True)
    for child in source.iterdir():
        child.replace(target / child.name)
    shutil.rmtree(staging, ignore_errors=True)
    return target
