"""A valid PNG of huge dimensions that is only a few hundred kilobytes on disk (a decompression bomb)."""

import struct
import zlib
from pathlib import Path


def write_huge_png(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """Write an all-black 1-bit grayscale PNG of ``width`` x ``height``, row by row.

    Built by hand with zlib so that writing it never holds the image in memory; decoding it
    as RGB would take ``3 * width * height`` bytes (1.2 GB at the default size).
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "none", then the packed bits
    packer = zlib.compressobj(1)
    rows_per_call = 500  # a few MB per call: fast, yet never the whole image at once
    blocks = [
        packer.compress(row * min(rows_per_call, height - start))
        for start in range(0, height, rows_per_call)
    ]
    idat = b"".join(blocks) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path
