"""Pictures of the test set: a confusion matrix and the misclassified images, per head.

At the end of testing, :class:`TestFiguresCallback` saves ``<stage-metric-name>.png`` files
(``test_confusion_matrix.png`` and ``test_misclassified.png`` for one head,
``test_<head>_confusion_matrix.png`` ... for several) and sends them to every logger that takes
images: TensorBoard (``add_image``), MLflow and Comet (artifacts/images), and any other logger
with a ``log_image`` method (Weights & Biases).

It stays cheap: confusion matrices accumulate on the device (torchmetrics, synchronised across
processes), at most ``max_misclassified`` images per head are kept, and figures are drawn once,
by the global-zero process, with matplotlib's Agg canvas (no display, no pyplot state).
"""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CometLogger, Logger, MLFlowLogger, TensorBoardLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from src.models.classifier_module import head_class_names
from src.utils import pylogger

log = pylogger.RankedLogger(__name__, rank_zero_only=True)

#: Above this many classes the matrix cells carry no numbers (unreadable otherwise).
MAX_CLASSES_WITH_TEXT = 20
#: Above this many classes the axes carry indices instead of class names.
MAX_CLASSES_WITH_NAMES = 30


def render(fig: Figure) -> np.ndarray:
    """The figure as an RGB uint8 array ``(H, W, 3)``."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def confusion_figure(matrix: MulticlassConfusionMatrix, names: list[str], title: str) -> Figure:
    """The (accumulated) confusion matrix drawn by torchmetrics, rows true, columns predicted."""
    n = len(names)
    size = min(20.0, max(5.0, 0.4 * n))
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.add_subplot()
    matrix.plot(
        ax=ax,
        add_text=n <= MAX_CLASSES_WITH_TEXT,
        labels=names if n <= MAX_CLASSES_WITH_NAMES else None,
    )
    ax.set_title(title)
    return fig


def denormalize(images: torch.Tensor, normalize: dict[str, list[float]] | None) -> torch.Tensor:
    """Normalized ``(N, C, H, W)`` -> ``[0, 1]`` (per image min-max when the stats are unknown)."""
    images = images.float().cpu()
    if normalize:
        mean = torch.tensor(normalize["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(normalize["std"]).view(1, -1, 1, 1)
        return (images * std + mean).clamp(0, 1)
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp(min=1e-8)


def tile_grid(images: torch.Tensor, columns: int, gap: int, label_height: int) -> np.ndarray:
    """Paste ``[0, 1]`` images ``(N, C, H, W)`` into one white ``(rows, cols)`` canvas, leaving
    ``label_height`` pixels above each tile for its caption; returns ``(H', W', C)`` floats."""
    count, channels, height, width = images.shape
    rows, cols = max(1, -(-count // columns)), min(columns, max(1, count))
    cell_h, cell_w = height + label_height + gap, width + gap
    canvas = np.ones((rows * cell_h, cols * cell_w, channels), dtype=np.float32)
    pixels = images.permute(0, 2, 3, 1).numpy()
    for i in range(count):
        top, left = (i // cols) * cell_h + label_height, (i % cols) * cell_w
        canvas[top : top + height, left : left + width] = pixels[i]
    return canvas


def misclassified_figure(
    images: torch.Tensor,
    true: torch.Tensor,
    pred: torch.Tensor,
    names: list[str],
    title: str,
    columns: int = 8,
) -> Figure:
    """A grid of ``[0, 1]`` images ``(N, C, H, W)``, each captioned with its true/predicted class.

    The grid is one image in one axes (captions are text on it): one axes per image would make
    drawing ~10x slower.
    """
    count = len(images)
    cols = min(columns, max(1, count))
    if count == 0:
        fig = Figure(figsize=(4.0, 1.5))
        fig.suptitle(title)
        fig.text(0.5, 0.4, "no misclassified images", ha="center", va="center")
        return fig
    height, width = images.shape[-2:]
    label_height, gap = max(8, height // 2), max(2, width // 8)
    canvas = tile_grid(images, cols, gap, label_height)
    # Figure shaped like the canvas (plus a title band), so tiles keep their aspect ratio.
    fig_w, title_h = 1.6 * cols, 0.5
    grid_h = fig_w * canvas.shape[0] / canvas.shape[1]
    fig = Figure(figsize=(fig_w, grid_h + title_h))
    ax = fig.add_axes((0.0, 0.0, 1.0, grid_h / (grid_h + title_h)))
    ax.axis("off")
    fig.suptitle(title, y=1.0 - 0.1 / (grid_h + title_h), va="top")
    if canvas.shape[-1] == 1:
        ax.imshow(canvas[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(canvas)
    for i, (t, p) in enumerate(zip(true.tolist(), pred.tolist(), strict=True)):
        x = (i % cols) * (width + gap) + width / 2
        y = (i // cols) * (height + label_height + gap) + label_height - 1
        ax.text(x, y, f"true {names[t]}\npred {names[p]}", ha="center", va="bottom", fontsize=8)
    return fig


def log_picture(logger: Logger, tag: str, path: Path, pixels: np.ndarray, step: int) -> None:
    """Send one picture to ``logger`` if it takes images (otherwise do nothing)."""
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(tag, pixels, global_step=step, dataformats="HWC")
    elif isinstance(logger, MLFlowLogger):
        logger.experiment.log_artifact(logger.run_id, str(path), artifact_path="figures")
    elif isinstance(logger, CometLogger):
        logger.experiment.log_image(str(path), name=tag, step=step)
    elif callable(getattr(logger, "log_image", None)):
        logger.log_image(key=tag, images=[str(path)], step=step)


class TestFiguresCallback(Callback):
    """Confusion matrix and misclassified-examples grid of every head at the end of testing.

    Needs the module's ``test_step`` to return ``{"logits": {head: ...}, "targets": {head: ...}}``
    (as :class:`~src.models.classifier_module.ClassifierLitModule` does).

    :param dirpath: Folder of the PNG files (default ``<trainer.default_root_dir>/figures``).
    :param max_misclassified: Misclassified images kept and drawn per head.
    :param columns: Images per row of the misclassified grid.
    :param log_to_loggers: Also send the pictures to the loggers that take images.
    """

    __test__ = False  # a "Test*" class that pytest must not collect

    def __init__(
        self,
        dirpath: str | None = None,
        max_misclassified: int = 32,
        columns: int = 8,
        log_to_loggers: bool = True,
    ) -> None:
        super().__init__()
        if max_misclassified < 0 or columns < 1:
            raise ValueError(
                f"max_misclassified must be >= 0 and columns >= 1; got {max_misclassified} "
                f"and {columns}."
            )
        self.dirpath = dirpath
        self.max_misclassified = max_misclassified
        self.columns = columns
        self.log_to_loggers = log_to_loggers
        self.matrices = nn.ModuleDict()
        self.wrong: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        self.kept: dict[str, int] = {}
        #: PNG files written by the last test run.
        self.saved: list[Path] = []
        self._warned = False

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Fresh confusion matrices (on the module's device) and misclassified buffers."""
        heads = dict(getattr(pl_module, "heads", {}))
        self.matrices = nn.ModuleDict(
            {
                h: MulticlassConfusionMatrix(num_classes=n, validate_args=False)
                for h, n in heads.items()
            }
        ).to(pl_module.device)
        self.wrong = {h: [] for h in heads}
        self.kept = dict.fromkeys(heads, 0)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Update the matrices; keep the first misclassified images up to the cap."""
        if not isinstance(outputs, dict) or "logits" not in outputs or "targets" not in outputs:
            if not self._warned:
                log.warning("test_step returned no {logits, targets}: no test figures are drawn.")
                self._warned = True
            return
        images = batch[0]
        for head, matrix in self.matrices.items():
            preds = outputs["logits"][head].argmax(dim=-1)
            targets = outputs["targets"][head]
            matrix.update(preds, targets)
            room = self.max_misclassified - self.kept[head]
            if room <= 0:
                continue
            wrong = (preds != targets).nonzero().flatten()[:room]
            if len(wrong):
                self.wrong[head].append((images[wrong].detach(), targets[wrong], preds[wrong]))
                self.kept[head] += len(wrong)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Draw, save and log the pictures of every head."""
        if not self.matrices:
            return
        metadata = pl_module.metadata() if callable(getattr(pl_module, "metadata", None)) else {}
        names = metadata.get("class_names") or head_class_names(
            getattr(trainer, "datamodule", None), pl_module.heads
        )
        normalize = metadata.get("normalize")
        # compute() synchronises across processes, so every rank calls it.
        computed = {h: m.compute() for h, m in self.matrices.items()}
        if not trainer.is_global_zero or not any(m.update_called for m in self.matrices.values()):
            return
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "figures")
        folder.mkdir(parents=True, exist_ok=True)
        self.saved = []
        multihead = len(self.matrices) > 1
        for head, matrix in self.matrices.items():
            tag = self._tag(pl_module, head, "confusion_matrix")
            accuracy = float(computed[head].diag().sum() / computed[head].sum().clamp(min=1))
            what = f"{head}: test" if multihead else "Test"
            title = f"{what} confusion matrix\naccuracy {accuracy:.4f}"
            fig = confusion_figure(matrix, names[head], title)
            self._save(trainer, fig, tag, folder)
            kept = self.wrong[head]
            images = torch.cat([k[0] for k in kept]) if kept else torch.zeros(0, 1, 1, 1)
            true = (
                torch.cat([k[1] for k in kept]).cpu() if kept else torch.zeros(0, dtype=torch.long)
            )
            pred = (
                torch.cat([k[2] for k in kept]).cpu() if kept else torch.zeros(0, dtype=torch.long)
            )
            tag = self._tag(pl_module, head, "misclassified")
            title = f"{what} images misclassified (first {len(images)})"
            fig = misclassified_figure(
                denormalize(images, normalize), true, pred, names[head], title, self.columns
            )
            self._save(trainer, fig, tag, folder)
        log.info(f"Saved test figures in {folder}")

    @staticmethod
    def _tag(pl_module: LightningModule, head: str, kind: str) -> str:
        """``test/<kind>`` for one head, ``test/<head>_<kind>`` for several."""
        if callable(getattr(pl_module, "metric_name", None)):
            return pl_module.metric_name("test", head, kind)
        return f"test/{head}_{kind}"

    def _save(self, trainer: Trainer, fig: Figure, tag: str, folder: Path) -> None:
        pixels = render(fig)  # drawn once: the same pixels go to the file and the loggers
        path = folder / f"{tag.replace('/', '_')}.png"
        Image.fromarray(pixels).save(path)
        self.saved.append(path)
        if not self.log_to_loggers:
            return
        for logger in trainer.loggers:
            try:
                log_picture(logger, tag, path, pixels, trainer.global_step)
            except Exception as err:  # noqa: BLE001 - a picture is not worth failing the run
                log.warning(f"Could not log {tag} to {type(logger).__name__}: {err}")
