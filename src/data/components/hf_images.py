"""Images of a Hugging Face dataset column, decoded in batches.

An ``Image`` feature stores encoded files (``{"bytes", "path"}``); they are read as raw arrow
batches (``Image(decode=False)``) and decoded by torchvision's decoders (Pillow for formats
they lack), after the header has been checked against a pixel limit, so that a hostile file
cannot allocate gigabytes. An image stored by path alone is read only from inside the folders
the user named (the dataset's own folder, its data files' folders, the cache), so a hostile
dataset cannot make a run read files from elsewhere on the machine. Any other column (arrays of
pixels) is read in numpy batches.
"""

import io
import logging
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from src.data.components.sources import ImageConverter, SourceError, to_uint8

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageCells:
    """How to read one image column.

    :param column: The column's name.
    :param feature: Its ``datasets`` feature (``Image`` or an array/sequence feature).
    :param limit: Largest width x height decoded (``data.max_image_pixels``); ``None``: none.
    :param roots: Folders an image stored by path alone may be read from (links resolved).
    """

    def __init__(
        self, column: str, feature: Any, limit: int | None, roots: Sequence[Path] = ()
    ) -> None:
        self.column, self.limit = column, limit
        self.roots = [Path(r).expanduser().resolve() for r in roots]
        self.encoded = type(feature).__name__ == "Image"

    def raw(self, data: Any) -> Any:
        """``data`` with this column left encoded (``{"bytes", "path"}``) when it holds files."""
        if not self.encoded:
            return data
        from datasets import Image as ImageFeature

        return data.cast_column(self.column, ImageFeature(decode=False))

    def decode(self, cell: Any) -> Any:
        """One cell: uint8 ``(C, H, W)`` for an encoded image, the array as is otherwise."""
        if not self.encoded:
            return np.asarray(cell)
        if not isinstance(cell, dict):
            raise SourceError(f"Column {self.column}: expected an encoded image, got {cell!r:.80}.")
        data = cell.get("bytes")
        where = cell.get("path") or f"an image of column {self.column}"
        if data is None:
            data = self._read_file(cell.get("path"))
        return decode_bytes(data, self.limit, where)

    def _read_file(self, path: str | None) -> bytes:
        """An image stored by path only: a local file (never a URL)."""
        if not path or "://" in path or not Path(path).is_file():
            raise SourceError(
                f"Column {self.column}: an image has no bytes and its path {path!r} is not a local "
                "file (URLs are not fetched). Store the image bytes in the dataset."
            )
        file = Path(path).resolve()
        if not any(file.is_relative_to(root) for root in self.roots):
            raise SourceError(
                f"Column {self.column}: an image is stored by its path {path!r}, which is outside "
                f"the dataset's folders {[str(r) for r in self.roots]}; such files are not read. "
                "Store the image bytes in the dataset, or keep the images inside its folder."
            )
        check_pixels(file, self.limit, path)
        return file.read_bytes()


def png_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG's IHDR chunk (the size its decoder allocates), else None."""
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    return None


def check_pixels(
    file: Any, limit: int | None, where: str, size: tuple[int, int] | None = None
) -> None:
    """Refuse an image whose header announces more than ``limit`` pixels (decodes nothing)."""
    try:
        if size is not None:
            width, height = size
        else:
            with Image.open(file) as image:
                width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SourceError(f"Cannot read {where}: {err}") from err
    except Image.DecompressionBombError as err:
        raise SourceError(f"{where} is refused: {err}") from err
    if limit is not None and width * height > limit:
        raise SourceError(
            f"{where} is {width} x {height} = {width * height:,} pixels, more than "
            f"data.max_image_pixels={limit:,}; refused before decoding. Raise the limit or "
            "shrink the image."
        )


def decode_bytes(data: bytes, limit: int | None, where: str) -> torch.Tensor:
    """An encoded image -> uint8 ``(C, H, W)`` with its own channels (alpha dropped)."""
    check_pixels(io.BytesIO(data), limit, where, png_size(data))  # PNG: no Pillow needed
    try:
        x = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED
        )
    except RuntimeError:  # a format torchvision does not decode (BMP, TIFF ...): Pillow
        with Image.open(io.BytesIO(data)) as image:
            return ImageConverter.to_tensor(image)
    if x.dtype != torch.uint8:  # 16-bit PNG
        x = TF.to_dtype(x, torch.uint8, scale=True)
    if x.shape[0] == 2:  # gray + alpha
        x = x[:1]
    return x


def batch_images(cells: ImageCells, values: Any, convert: ImageConverter) -> torch.Tensor:
    """One batch of column values -> converted uint8 ``(N, C, H, W)``."""
    if cells.encoded:
        images = [cells.decode(v) for v in values]
    else:
        array = np.asarray(values) if not isinstance(values, np.ndarray) else values
        if array.dtype != object and array.ndim in (3, 4):  # uniform: one tensor
            x = torch.from_numpy(np.ascontiguousarray(array))
            x = x.unsqueeze(1) if x.ndim == 3 else x
            if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
                x = x.permute(0, 3, 1, 2)
            return convert.batch(to_uint8(x))
        images = [ImageConverter.to_tensor(np.asarray(v)) for v in values]
    if len({tuple(x.shape) for x in images}) == 1:
        return convert.batch(torch.stack(images))
    converted = [convert(x) for x in images]
    shapes = sorted({tuple(x.shape) for x in converted})
    if len(shapes) > 1:
        raise SourceError(
            f"Column {cells.column} has images of shapes {shapes[:4]}; set data.image_size (and "
            "data.channels) so that all images are resized to one shape."
        )
    return torch.stack(converted)


def decode_cells(
    data: Any,
    cells: ImageCells,
    label_column: str,
    label_map: dict | None,
    convert: ImageConverter,
    split: str,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split -> uint8 ``(N, C, H, W)`` images and int64 ``(N,)`` labels."""
    n = len(data)
    raw = cells.raw(data).with_format("arrow" if cells.encoded else "numpy")
    images: torch.Tensor | None = None
    labels = torch.empty(n, dtype=torch.int64)
    start = last = time.monotonic()
    done = 0
    for batch in raw.iter(batch_size=batch_size):
        if cells.encoded:
            values = batch.column(cells.column).to_pylist()
            batch_labels = batch.column(label_column).to_pylist()
        else:
            values, batch_labels = batch[cells.column], batch[label_column]
        x = batch_images(cells, values, convert)
        if images is None:
            images = torch.empty((n, *x.shape[1:]), dtype=torch.uint8)
        if x.shape[1:] != images.shape[1:]:
            raise SourceError(
                f"Images of the {split} split from row {done} are {tuple(x.shape[1:])} but earlier "
                f"ones are {tuple(images.shape[1:])}; set data.image_size (and data.channels) so "
                "that all images are resized to one shape."
            )
        images[done : done + len(x)] = x
        if label_map:
            batch_labels = [label_map[v] for v in batch_labels]
        labels[done : done + len(x)] = torch.as_tensor(np.asarray(batch_labels, dtype=np.int64))
        done += len(x)
        if time.monotonic() - last > 10:
            last = time.monotonic()
            log.info(f"Decoded {done}/{n} images of {split} ({done / (last - start):.0f}/s)")
    if images is None:
        raise SourceError(f"The {split} split has no images.")
    log.info(f"Decoded {n} images of {split} in {time.monotonic() - start:.1f} s")
    return images, labels
