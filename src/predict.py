"""Predict classes with a trained checkpoint: ``python src/predict.py ckpt_path=... input=...``.

``input`` is one of

- an image file (any format torchvision or Pillow reads, grayscale/RGB/RGBA/palette, up to
  ``max_image_pixels``, checked from the file's header before decoding),
- a folder: every image file under it, recursively, in sorted order,
- ``split:train``, ``split:val`` or ``split:test``: that split of the datamodule stored in the
  checkpoint (or of ``data=<config>`` when given), with its true labels.

Files are converted to the checkpoint's input shape (channels, then resized) and normalized with
its stored mean/std; nothing of the training config is needed. The predictions (source, class
name, class index and probability of every head) go to ``predictions.csv`` and
``predictions.json`` in the run folder. See docs/predict_export.md.
"""

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import rootutils
from omegaconf import DictConfig, OmegaConf

rootutils.setup_root(__file__, indicator=".project-root", pythonpath=True)

from src.utils.hydra_help import answer_from_config, speed_up_help, wants_info  # noqa: E402

if __name__ == "__main__" and wants_info():  # --help, --cfg, --info: before torch and Lightning
    answer_from_config(
        hydra.main(version_base="1.3", config_path="../configs", config_name="predict.yaml")(
            lambda cfg: None
        )
    )

import torch  # noqa: E402
from lightning import LightningModule, Trainer  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision.datasets.folder import IMG_EXTENSIONS  # noqa: E402
from torchvision.io import ImageReadMode, decode_image  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from src.data.components.image_folder import (  # noqa: E402
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageFolderError,
    ImageTooLargeError,
    check_image_pixels,
)
from src.data.components.memory import InMemoryImages, keep_batch  # noqa: E402
from src.models.build import load_model_from_checkpoint  # noqa: E402
from src.utils import (  # noqa: E402
    RankedLogger,
    extras,
    freeze_imported_objects,
    report_errors,
    task_wrapper,
)
from src.utils.local_paths import localize_paths  # noqa: E402
from src.utils.trusted_targets import check_trusted_config  # noqa: E402
from src.utils.utils import require_values  # noqa: E402

log = RankedLogger(__name__, rank_zero_only=True)

SPLIT_PREFIX = "split:"
SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------ images
def load_image(
    path: str | Path, channels: int, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> torch.Tensor:
    """Read an image as uint8 ``(channels, H, W)``: torchvision's decoder, else Pillow.

    Alpha is dropped, palette/grayscale/RGB images are converted to ``channels`` (1 or 3) and
    16-bit images are scaled to 8 bits.

    :raises ImageTooLargeError: if the file's header announces more than ``max_pixels`` pixels
        (checked before anything is decoded).
    :raises ValueError: if the file is not a readable image.
    """
    try:
        check_image_pixels(path, max_pixels, key="max_image_pixels")
    except ImageTooLargeError:
        raise
    except ImageFolderError as err:
        raise ValueError(str(err)) from err.__cause__
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    try:
        image = decode_image(str(path), mode=mode)
        # 16-bit PNGs decode as uint16: scale to the 8-bit range the model was trained on.
        return v2.functional.to_dtype(image, torch.uint8, scale=True)
    except RuntimeError:
        pass  # a format torchvision cannot decode (BMP, TIFF, ...): Pillow below
    try:
        with Image.open(path) as pil:
            return v2.functional.pil_to_tensor(pil.convert("L" if channels == 1 else "RGB"))
    except OSError as err:
        raise ValueError(f"Cannot read image {path}: {err}") from err


def image_transform(metadata: dict[str, Any]) -> v2.Compose:
    """uint8 ``(C, H', W')`` -> float ``(C, H, W)`` at the checkpoint's input size, normalized."""
    _, height, width = metadata["input_shape"]
    normalize = metadata.get("normalize") or {}
    channels = metadata["input_shape"][0]
    return v2.Compose(
        [
            v2.Resize([height, width], antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(
                mean=normalize.get("mean", [0.0] * channels),
                std=normalize.get("std", [1.0] * channels),
            ),
        ]
    )


class ImageFiles(Dataset):
    """Image files converted to the checkpoint's input: ``(image, index)`` pairs."""

    def __init__(
        self,
        paths: Sequence[Path],
        metadata: dict[str, Any],
        max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.paths = list(paths)
        self.channels = int(metadata["input_shape"][0])
        self.transform = image_transform(metadata)
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_image(self.paths[i], self.channels, self.max_pixels)), i


def find_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively, sorted), by extension.

    :raises ValueError: if a subfolder cannot be listed (never skipped silently) or none of the
        files is an image.
    """

    def unreadable(err: OSError) -> None:
        raise ValueError(
            f"Cannot list {err.filename} under input={str(folder)!r} ({err.strerror}); fix its "
            f"permissions or move it out of the folder."
        ) from err

    images = sorted(
        Path(root) / name
        for root, _, names in os.walk(folder, onerror=unreadable)
        for name in names
        if Path(name).suffix.lower() in IMG_EXTENSIONS and (Path(root) / name).is_file()
    )
    if not images:
        raise ValueError(
            f"input={str(folder)!r} holds no image files (looked for {', '.join(IMG_EXTENSIONS)})."
        )
    return images


def readable_images(
    paths: Sequence[Path], channels: int, max_pixels: int | None
) -> tuple[list[Path], list[dict[str, str]]]:
    """``(paths that load, [{source, reason}] of those that do not)`` for ``on_error=skip``.

    :raises ValueError: if no file can be read.
    """
    good, skipped = [], []
    for path in paths:
        try:
            load_image(path, channels, max_pixels)
            good.append(path)
        except (ValueError, RuntimeError) as err:  # unreadable, corrupt or over the limit
            skipped.append({"source": str(path), "reason": str(err)})
            log.warning(f"Skipping {path}: {err}")
    if not good:
        raise ValueError(f"None of the {len(paths)} input file(s) could be read: {skipped[0]}")
    return good, skipped


# ------------------------------------------------------------------ splits
class NormalizeBatch:
    """Collate for in-memory batches: normalize the uint8 slice with the datamodule's transform."""

    def __init__(self, transform: torch.nn.Module) -> None:
        self.transform = transform

    def __call__(self, batch: Any) -> tuple[torch.Tensor, Any]:
        images, labels = keep_batch(batch)
        return self.transform(images, train=False), labels


def split_data(cfg: DictConfig, metadata: dict[str, Any], split: str) -> tuple[Any, Any]:
    """``(datamodule, InMemoryImages)`` of one split of ``cfg.data`` or the stored data config."""
    if split not in SPLITS:
        raise ValueError(f"input={SPLIT_PREFIX}{split} names no split; use one of {list(SPLITS)}.")
    overrides = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else {}
    if "_target_" in overrides:
        data_cfg = overrides
    else:  # the stored datamodule, with +data.<key>=... overrides (e.g. data_dir)
        data_cfg = metadata.get("data")
        if not data_cfg:
            raise ValueError(
                f"{cfg.ckpt_path} stores no datamodule config; pass one, e.g. data=mnist."
            )
        check_trusted_config(data_cfg, f"The data config stored in {cfg.ckpt_path}")
        stored = {k: v for k, v in data_cfg.items() if k not in overrides}
        data_cfg = localize_paths(stored, cfg.paths.root_dir, cfg.paths.data_dir) | overrides
    # One pass over the split: decoded into memory once, batches normalized on the CPU.
    data_cfg = {**data_cfg, "in_memory": True, "data_on_device": False}
    datamodule = hydra.utils.instantiate(data_cfg, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("predict")
    stats = metadata.get("normalize")
    if stats and callable(getattr(datamodule, "set_normalization", None)):
        datamodule.set_normalization(stats["mean"], stats["std"])  # the values it trained with
    data = getattr(datamodule, f"data_{split}")
    if not isinstance(data, InMemoryImages):
        raise TypeError(f"{type(datamodule).__name__}.data_{split} is not an in-memory split.")
    return datamodule, data


def split_targets(labels: Any, heads: list[str]) -> dict[str, torch.Tensor] | None:
    """The split's labels as ``{head: labels}`` for the model's heads, or ``None`` if they
    do not match (a single-head model on a one-label split takes that label)."""
    if not isinstance(labels, dict):
        return {heads[0]: labels} if len(heads) == 1 else None
    if all(h in labels for h in heads):
        return {h: labels[h] for h in heads}
    if len(heads) == 1 and len(labels) == 1:
        return {heads[0]: next(iter(labels.values()))}
    return None


# ----------------------------------------------------------------- outputs
def prediction_rows(
    probs: dict[str, torch.Tensor],
    class_names: dict[str, list[str]],
    sources: Sequence[str],
    targets: dict[str, torch.Tensor] | None = None,
) -> list[dict[str, Any]]:
    """One record per image: ``{index, source, <head>: {class, index, prob[, target]}}``."""
    best = {h: p.max(dim=-1) for h, p in probs.items()}
    rows = []
    for i, source in enumerate(sources):
        row: dict[str, Any] = {"index": i, "source": source}
        for head, (prob, idx) in best.items():
            k = int(idx[i])
            row[head] = {"class": class_names[head][k], "index": k, "prob": float(prob[i])}
            if targets is not None:
                row[head]["target"] = class_names[head][int(targets[head][i])]
        rows.append(row)
    return rows


def write_predictions(
    rows: list[dict[str, Any]], heads: Sequence[str], out_dir: Path, info: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``predictions.csv`` (flat columns ``<head>``, ``<head>_index``, ``<head>_prob``,
    ``<head>_target``) and ``predictions.json`` (``info`` plus the nested rows)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    has_target = bool(rows) and "target" in rows[0][heads[0]]
    suffixes = [("", "class"), ("_index", "index"), ("_prob", "prob")]
    suffixes += [("_target", "target")] if has_target else []
    columns = ["index", "source"] + [f"{h}{s}" for h in heads for s, _ in suffixes]
    csv_path, json_path = out_dir / "predictions.csv", out_dir / "predictions.json"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            cells = [row["index"], row["source"]]
            writer.writerow(cells + [row[h][key] for h in heads for _, key in suffixes])
    json_path.write_text(json.dumps({**info, "predictions": rows}, indent=1))
    return csv_path, json_path


# -------------------------------------------------------------------- task
def make_loader(
    cfg: DictConfig, metadata: dict[str, Any]
) -> tuple[DataLoader, list[str], dict[str, torch.Tensor] | None]:
    """``(loader of normalized images, source of each image, true labels or None)``."""
    value = str(cfg.input)
    kwargs = dict(batch_size=int(cfg.batch_size), shuffle=False)
    if value.startswith(SPLIT_PREFIX):
        split = value[len(SPLIT_PREFIX) :]
        datamodule, data = split_data(cfg, metadata, split)
        targets = split_targets(data.labels, list(metadata["heads"]))
        loader = DataLoader(data, collate_fn=NormalizeBatch(datamodule.transform), **kwargs)
        return loader, [f"{split}/{i}" for i in range(len(data))], targets
    path = Path(value).expanduser()
    if path.is_dir():
        paths = find_images(path)
    elif path.is_file():
        paths = [path]
    else:
        raise ValueError(
            f"input={value!r} is not an image file, a folder, nor {SPLIT_PREFIX}<"
            f"{'|'.join(SPLITS)}> (a split of the checkpoint's datamodule)."
        )
    max_pixels = cfg.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)
    skipped = []
    if cfg.get("on_error", "raise") == "skip":
        paths, skipped = readable_images(paths, int(metadata["input_shape"][0]), max_pixels)
    elif cfg.get("on_error", "raise") != "raise":
        raise ValueError(f"on_error={cfg.on_error!r} is not one of 'raise', 'skip'.")
    files = ImageFiles(paths, metadata, max_pixels)
    files.skipped = skipped
    loader = DataLoader(files, num_workers=int(cfg.num_workers), **kwargs)
    return loader, [str(p) for p in paths], None


def run_predictions(
    trainer: Trainer, module: LightningModule, loader: DataLoader
) -> dict[str, torch.Tensor]:
    """``{head: probabilities (N, classes)}`` of every image of ``loader``."""
    batches = trainer.predict(module, dataloaders=loader, return_predictions=True)
    return {h: torch.cat([b[h].float().cpu() for b in batches]) for h in batches[0]}


#: The keys predict needs, with an example of each for the error that names them.
REQUIRED = {"ckpt_path": "<run>/checkpoints/last.ckpt", "input": "<image|folder|split:test>"}


@task_wrapper
def predict(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Predict ``cfg.input`` with ``cfg.ckpt_path``; write CSV and JSON to the run folder.

    :return: ``({"num_predictions": N}, objects)``; objects include ``rows`` and the file paths.
    """
    require_values(cfg, REQUIRED)
    module, metadata = load_model_from_checkpoint(cfg.ckpt_path)
    if not metadata.get("input_shape"):
        raise ValueError(f"{cfg.ckpt_path} does not record the model's input shape.")
    loader, sources, targets = make_loader(cfg, metadata)
    trainer: Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
    log.info(f"Predicting {len(sources)} image(s) from {cfg.input}")
    probs = run_predictions(trainer, module, loader)
    rows = prediction_rows(probs, metadata["class_names"], sources, targets)
    info = {
        "checkpoint": str(cfg.ckpt_path),
        "input": str(cfg.input),
        "class_names": metadata["class_names"],
        "skipped": getattr(loader.dataset, "skipped", []),  # on_error=skip: {source, reason}
    }
    csv_path, json_path = write_predictions(
        rows, list(metadata["heads"]), Path(cfg.paths.output_dir), info
    )
    log.info(f"Wrote {len(rows)} predictions to {csv_path} and {json_path}")
    if info["skipped"]:
        log.warning(f"Skipped {len(info['skipped'])} unreadable file(s), listed in {json_path}")
    objects = {"cfg": cfg, "model": module, "rows": rows, "csv": csv_path, "json": json_path}
    return {"num_predictions": len(rows)}, objects


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict.yaml")
@report_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    require_values(cfg, REQUIRED)  # before the config tree, which cannot show a missing value
    extras(cfg)
    predict(cfg)


if __name__ == "__main__":
    speed_up_help()
    freeze_imported_objects()
    main()
