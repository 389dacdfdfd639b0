"""Test-set pictures: confusion matrix and misclassified grid per head, as PNG and in TensorBoard."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.callbacks.confusion_figures import TestFiguresCallback, denormalize
from tests.conftest import MULTIHEAD, train_tiny


def png_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    """``{file name: (width, height)}`` of every PNG in ``folder`` (each opened as an image)."""
    sizes = {}
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            sizes[path.name] = image.size
    return sizes


def tensorboard_images(folder: Path) -> set[str]:
    """Image tags in the TensorBoard event files under ``folder``."""
    tags = set()
    for events in folder.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
        accumulator.Reload()
        tags |= set(accumulator.Tags()["images"])
    return tags


def test_single_head_run_writes_pictures(tmp_path: Path) -> None:
    train_tiny(tmp_path, logger="tensorboard", figures=True)
    sizes = png_sizes(tmp_path / "figures")
    assert set(sizes) == {"test_confusion_matrix.png", "test_misclassified.png"}
    assert all(w >= 300 and h >= 300 for w, h in sizes.values())
    assert tensorboard_images(tmp_path / "tensorboard") == {
        "test/confusion_matrix",
        "test/misclassified",
    }


def test_multihead_run_writes_pictures_per_head(tmp_path: Path) -> None:
    train_tiny(tmp_path, "experiment=mnist_multihead_cnn", logger="tensorboard", figures=True)
    expected = {
        f"test/{h}_{kind}" for h in MULTIHEAD for kind in ("confusion_matrix", "misclassified")
    }
    assert set(png_sizes(tmp_path / "figures")) == {f"{t.replace('/', '_')}.png" for t in expected}
    assert tensorboard_images(tmp_path / "tensorboard") == expected


def fake_run(tmp_path: Path) -> tuple[SimpleNamespace, SimpleNamespace]:
    """A trainer and a two-head module, just what the callback reads."""
    module = SimpleNamespace(
        heads={"a": 3, "b": 2},
        device=torch.device("cpu"),
        metadata=lambda: {
            "class_names": {"a": ["x", "y", "z"], "b": ["no", "yes"]},
            "normalize": {"mean": [0.5], "std": [0.25]},
        },
        metric_name=lambda stage, head, kind: f"{stage}/{head}_{kind}",
    )
    trainer = SimpleNamespace(
        is_global_zero=True, default_root_dir=str(tmp_path), loggers=[], global_step=7
    )
    return trainer, module


def test_callback_counts_and_caps_misclassified(tmp_path: Path) -> None:
    trainer, module = fake_run(tmp_path)
    callback = TestFiguresCallback(max_misclassified=3, columns=2)
    callback.on_test_epoch_start(trainer, module)
    images = torch.randn(4, 1, 5, 5)
    targets = {"a": torch.tensor([0, 1, 2, 2]), "b": torch.tensor([0, 1, 1, 0])}
    preds = {"a": torch.tensor([0, 2, 1, 2]), "b": torch.tensor([1, 0, 0, 1])}
    for batch_idx in range(2):
        outputs = {"logits": {h: torch.nn.functional.one_hot(p) * 5.0 for h, p in preds.items()}}
        outputs["targets"] = targets
        callback.on_test_batch_end(trainer, module, outputs, (images, targets), batch_idx)
    callback.on_test_epoch_end(trainer, module)

    matrix_a = callback.matrices["a"].compute()
    assert matrix_a.tolist() == [[2, 0, 0], [0, 0, 2], [0, 2, 2]]
    assert callback.matrices["b"].compute().tolist() == [[0, 4], [4, 0]]
    assert callback.kept == {"a": 3, "b": 3}  # 4 and 8 wrong, capped at 3
    kept_a = torch.cat([k[0] for k in callback.wrong["a"]])
    assert torch.equal(kept_a, torch.cat([images[1:3], images[1:2]]))
    assert {p.name for p in callback.saved} == {
        "test_a_confusion_matrix.png",
        "test_a_misclassified.png",
        "test_b_confusion_matrix.png",
        "test_b_misclassified.png",
    }
    assert set(png_sizes(tmp_path / "figures")) == {p.name for p in callback.saved}


def test_callback_without_outputs_draws_nothing(tmp_path: Path) -> None:
    trainer, module = fake_run(tmp_path)
    callback = TestFiguresCallback()
    callback.on_test_epoch_start(trainer, module)
    callback.on_test_batch_end(trainer, module, None, (torch.zeros(2, 1, 4, 4), None), 0)
    callback.on_test_epoch_end(trainer, module)
    assert callback.saved == [] and not (tmp_path / "figures").exists()


def test_denormalize_inverts_normalization() -> None:
    pixels = torch.rand(2, 3, 4, 4)
    stats = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}
    mean, std = (
        torch.tensor(stats["mean"]).view(1, 3, 1, 1),
        torch.tensor(stats["std"]).view(1, 3, 1, 1),
    )
    torch.testing.assert_close(denormalize((pixels - mean) / std, stats), pixels)
    scaled = denormalize(pixels * 10 - 3, None)  # unknown stats: min-max per image
    assert scaled.amin(dim=(1, 2, 3)).tolist() == pytest.approx([0, 0])
    assert scaled.amax(dim=(1, 2, 3)).tolist() == pytest.approx([1, 1])


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_misclassified must be >= 0"):
        TestFiguresCallback(max_misclassified=-1)
