"""Multihead labels for MNIST: the digit plus two attributes of how it was written.

- **thickness** (5 classes, 0 = very thin ... 4 = very thick) comes from each image's own stroke
  width, not from its digit: essentially ``ink mass / skeleton length``, where the ink mass is
  the summed intensity (in pixels of full ink) and the skeleton is the one-pixel-wide centre line
  of the binarized digit (Zhang-Suen thinning), corrected for the length thinning trims off each
  stroke end (see :func:`stroke_width`). The widths are cut into 5 classes at the 20/40/60/80 %
  quantiles of the official *training* images; the same thresholds label the test images, so each
  class holds about a fifth of the training set.
- **smoothness** (3 classes) follows the digit's shape: 0, 6, 8, 9 are smooth
  (2); 2, 3, 5 medium (1); 1, 4, 7 angular (0).

Stroke widths are computed once per split on the whole uint8 tensor (vectorised: about 10-30 s for
the 60,000 training images on two CPU cores) and cached in a small ``.pt`` file next to the data, keyed by
:data:`LABEL_VERSION` and a fingerprint of the images, so neither epochs nor later runs redo it.
"""

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: Bump when the stroke-width rule changes: old cache files are then ignored.
LABEL_VERSION = "stroke-width-zhang-suen-ends-v2"
#: Heads an MNIST datamodule can yield and their class counts.
MNIST_HEADS = {"digit": 10, "thickness": 5, "smoothness": 3}
THICKNESS_NAMES = ("very thin", "thin", "medium", "thick", "very thick")
SMOOTHNESS_NAMES = ("angular", "medium", "smooth")
#: Smoothness class of each digit 0-9: 0,6,8,9 smooth; 2,3,5 medium; 1,4,7 angular.
SMOOTHNESS_BY_DIGIT = (2, 0, 1, 1, 0, 1, 2, 0, 2, 2)
#: Pixels at or above this uint8 value count as stroke when thinning.
INK_THRESHOLD = 128

# Neighbour order of Zhang & Suen (1984): P2 (north), then clockwise to P9 (north-west).
_NEIGHBOUR_OFFSETS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def smoothness_from_digit(digits: torch.Tensor) -> torch.Tensor:
    """Smoothness class (0 angular, 1 medium, 2 smooth) of each digit label."""
    table = torch.tensor(SMOOTHNESS_BY_DIGIT, dtype=torch.long, device=digits.device)
    return table[digits.long()]


@cache
def _deletion_tables() -> torch.Tensor:
    """``(2, 256)`` bool: may a stroke pixel with this 8-neighbour code go in sub-iteration 1/2?

    Bit ``i`` of the code is neighbour ``P(i+2)``. Conditions of Zhang-Suen: 2 to 6 stroke
    neighbours, exactly one 0->1 transition around the pixel, and the two sub-iteration tests.
    """
    tables = torch.zeros(2, 256, dtype=torch.bool)
    for code in range(256):
        p = [(code >> i) & 1 for i in range(8)]  # p[0] = P2 ... p[7] = P9
        neighbours = sum(p)
        transitions = sum(p[i] == 0 and p[(i + 1) % 8] == 1 for i in range(8))
        if not (2 <= neighbours <= 6 and transitions == 1):
            continue
        p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
        tables[0, code] = p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
        tables[1, code] = p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
    return tables


def _neighbour_codes(padded: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """8-bit neighbourhood code of the pixels of zero-padded uint8 0/1 images ``(N, H+2, W+2)``.

    The batch is read as one flat array, so every neighbour is a contiguous slice at a fixed
    offset (the zero border keeps images apart): far faster on CPU than strided 2-D shifts or a
    one-channel convolution. Bit ``i`` of a code is neighbour ``P(i+2)``.

    :return: ``(codes, start, stop)``: uint8 codes of the flat pixels ``start:stop``.
    """
    row = padded.shape[-1]
    flat = padded.view(-1)
    start, stop = row + 1, flat.numel() - row - 1  # every pixel that has all 8 neighbours
    codes = torch.zeros(stop - start, dtype=torch.uint8, device=padded.device)
    for bit, (dy, dx) in enumerate(_NEIGHBOUR_OFFSETS):
        offset = dy * row + dx
        codes.add_(flat[start + offset : stop + offset], alpha=1 << bit)
    return codes, start, stop


def _lookup(padded: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``table[code]`` at every stroke pixel of zero-padded uint8 images (0 elsewhere)."""
    codes, start, stop = _neighbour_codes(padded)
    flat = padded.view(-1)
    out = torch.zeros(flat.shape, dtype=table.dtype, device=flat.device)
    out[start:stop] = torch.take(table, codes.long()) * flat[start:stop]
    return out.view(padded.shape)


def skeletonize(binary: torch.Tensor, max_iterations: int = 100) -> torch.Tensor:
    """One-pixel-wide skeletons of a batch of binary images (Zhang-Suen thinning).

    All images are thinned together; each sub-iteration is eight shifted integer additions and a
    256-entry table look-up, and images drop out once they stop changing.

    :param binary: Bool tensor ``(N, H, W)``, ``True`` on the stroke.
    :param max_iterations: Safety bound; thinning ends earlier once no pixel changes.
    :return: Bool tensor ``(N, H, W)``, the skeletons.
    """
    # uint8 0/1 throughout: no bool<->int conversions inside the loop.
    skeleton = F.pad(binary.to(torch.uint8), (1, 1, 1, 1))
    tables = _deletion_tables().to(device=binary.device, dtype=torch.uint8)
    active = torch.arange(len(skeleton), device=binary.device)  # images still thinning
    for _ in range(max_iterations):
        if len(active) == 0:
            break
        current = skeleton[active]
        removed = torch.zeros_like(current)
        for table in tables:
            deletable = _lookup(current, table)
            current -= deletable
            removed |= deletable
        skeleton[active] = current
        active = active[removed.flatten(1).amax(dim=1) > 0]
    return skeleton[:, 1:-1, 1:-1].bool()


def count_endpoints(skeleton: torch.Tensor) -> torch.Tensor:
    """Stroke ends of each skeleton ``(N, H, W)``: pixels with one neighbour (an isolated dot
    counts as two ends)."""
    ends_per_pixel = torch.tensor([2, 1] + [0] * 254, dtype=torch.uint8)  # by neighbour count
    table = ends_per_pixel[torch.tensor([bin(c).count("1") for c in range(256)])]
    padded = F.pad(skeleton.to(torch.uint8), (1, 1, 1, 1))
    return _lookup(padded, table.to(skeleton.device)).sum(dim=(1, 2))


def stroke_width(
    images: torch.Tensor, threshold: int = INK_THRESHOLD, chunk_size: int = 10_000
) -> torch.Tensor:
    """Mean stroke width of each image in pixels, from its ink mass and skeleton.

    A stroke of width ``w`` whose skeleton has ``L`` pixels and ``E`` ends holds
    ``ink = w * (L + E * (w - 1) / 2)`` pixels of ink: thinning shortens it by about ``(w - 1) / 2``
    at each end. Solving for ``w`` gives the width; without ends (loops only) it is ``ink / L``.
    Bars of width 1 to 6 measure 1.0, 2.1, 3.2, 4.2, 5.3, 6.3.

    :param images: uint8 images ``(N, 1, H, W)`` or ``(N, H, W)``, white stroke on black.
    :param threshold: uint8 level at which a pixel counts as stroke for the skeleton (the ink
        mass uses the full grey levels).
    :param chunk_size: Images thinned at once (bounds memory).
    :return: float32 ``(N,)``; about 0 for an image without ink.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"stroke_width needs uint8 images, got {images.dtype}.")
    images = images.reshape(len(images), *images.shape[-2:])
    widths = []
    for chunk in images.split(chunk_size):
        ink = chunk.float().sum(dim=(1, 2)) / 255.0
        skeleton = skeletonize(chunk >= threshold)
        length = skeleton.sum(dim=(1, 2)).float()
        ends = count_endpoints(skeleton).float()
        # Root of (E/2) w^2 + (L - E/2) w - ink = 0.
        b = length - ends / 2
        with_ends = (-b + torch.sqrt(b * b + 2 * ends * ink)) / ends.clamp(min=1.0)
        widths.append(torch.where(ends > 0, with_ends, ink / length.clamp(min=1.0)))
    return torch.cat(widths) if widths else torch.zeros(0)


def quantile_thresholds(scores: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The ``num_classes - 1`` inner quantiles of ``scores`` (equal-frequency class bounds)."""
    if num_classes < 2:
        raise ValueError(f"Need at least 2 classes to bucket a score, got {num_classes}.")
    levels = torch.arange(1, num_classes, dtype=torch.float64) / num_classes
    return torch.quantile(scores.double(), levels).float()


def bucketize(scores: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Class index of each score: how many thresholds it reaches (0 ... len(thresholds))."""
    return torch.bucketize(scores, thresholds.to(scores), right=True).long()


def images_digest(images: torch.Tensor) -> str:
    """Short content hash of an image tensor: tells whether a cache belongs to these images."""
    data = images.detach().cpu().contiguous()
    digest = hashlib.sha1(data.numpy().tobytes(), usedforsecurity=False)
    digest.update(str(tuple(data.shape)).encode())
    return digest.hexdigest()[:16]


def cached_stroke_widths(images: torch.Tensor, cache_file: str | Path) -> torch.Tensor:
    """:func:`stroke_width` of ``images``, read from ``cache_file`` when it matches.

    The file holds ``{version, fingerprint, stroke_width}``; a different :data:`LABEL_VERSION` or
    different images make it stale, and it is recomputed and replaced (atomically, so parallel
    processes never read half a file).
    """
    cache_file = Path(cache_file)
    key = {"version": LABEL_VERSION, "fingerprint": images_digest(images)}
    if cache_file.exists():
        try:
            cached = torch.load(cache_file, weights_only=True)
            if all(cached.get(k) == v for k, v in key.items()):
                return cached["stroke_width"]
            log.info(f"Stroke-width cache {cache_file} is stale; recomputing.")
        except Exception as err:  # noqa: BLE001 - an unreadable cache is just recomputed
            log.warning(f"Ignoring unreadable stroke-width cache {cache_file}: {err}")
    log.info(f"Computing stroke widths of {len(images)} images (cached in {cache_file})...")
    widths = stroke_width(images)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_suffix(f".{os.getpid()}.partial")
    torch.save({**key, "stroke_width": widths}, partial)
    partial.replace(cache_file)
    return widths


class MNISTAttributeLabels:
    """Builds ``{digit, thickness, smoothness}`` label dicts for the MNIST splits.

    :param cache_dir: Folder for the stroke-width cache files (next to the data).
    :param read_split: ``read_split(train) -> (uint8 images, digit labels)`` of an official split;
        used to get the training images whose quantiles set the thickness thresholds.
    :param thickness_classes: Number of equal-frequency thickness classes (5 by default).
    """

    def __init__(
        self,
        cache_dir: str | Path,
        read_split: Callable[[bool], tuple[torch.Tensor, torch.Tensor]],
        thickness_classes: int = MNIST_HEADS["thickness"],
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.read_split = read_split
        self.thickness_classes = thickness_classes
        self._widths: dict[bool, torch.Tensor] = {}

    @property
    def heads(self) -> dict[str, int]:
        """``{head: num_classes}`` of every label this class can make."""
        return {**MNIST_HEADS, "thickness": self.thickness_classes}

    def cache_file(self, train: bool) -> Path:
        """Cache file of one split's stroke widths."""
        split = "train" if train else "test"
        return self.cache_dir / f"stroke_width_{LABEL_VERSION}_{split}.pt"

    def stroke_widths(self, train: bool, images: torch.Tensor | None = None) -> torch.Tensor:
        """Stroke widths of a split (from memory, the cache file, or computed once)."""
        if train not in self._widths:
            if images is None:
                images, _ = self.read_split(train)
            self._widths[train] = cached_stroke_widths(images, self.cache_file(train))
        return self._widths[train]

    def thresholds(self) -> torch.Tensor:
        """Thickness class bounds: quantiles of the *training* images' stroke widths."""
        return quantile_thresholds(self.stroke_widths(train=True), self.thickness_classes)

    def labels(
        self, train: bool, images: torch.Tensor, digits: torch.Tensor, heads: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """``{head: labels}`` for the official split ``train`` holding ``images``/``digits``."""
        unknown = [h for h in heads if h not in MNIST_HEADS]
        if unknown:
            raise ValueError(f"Unknown MNIST head(s) {unknown}; choose from {list(MNIST_HEADS)}.")
        made = {"digit": lambda: digits.long(), "smoothness": lambda: smoothness_from_digit(digits)}
        made["thickness"] = lambda: bucketize(self.stroke_widths(train, images), self.thresholds())
        return {h: made[h]() for h in heads}
