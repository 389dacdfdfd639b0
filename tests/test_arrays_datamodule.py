"""``data=arrays``: .npz files of numpy arrays, and through them the shared source datamodule
(decode cache, computed normalization, own validation split, per-sample pipeline)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from src.data.arrays_datamodule import ArraysDataModule
from src.data.components import sources
from src.data.components.sources import SourceError
from tests.conftest import compose_config

CLASSES = ["circle", "square", "triangle"]


def write_npz(
    path: Path, n_train: int = 90, n_test: int = 30, layout: str = "nhwc", **extra
) -> Path:
    """Three classes told apart by brightness, so a few batches learn them."""
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 3
        x = rng.integers(0, 60, (n, 12, 12, 3)) + 80 * y[:, None, None, None]
        x = x.astype(np.uint8)
        return (x.transpose(0, 3, 1, 2) if layout == "nchw" else x), y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    np.savez(path, **{**arrays, "class_names": np.array(CLASSES), **extra})
    return path


def make(path: Path, tmp_path: Path, **kwargs) -> ArraysDataModule:
    dm = ArraysDataModule(path=str(path), data_dir=str(tmp_path / "data"), batch_size=8, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_reads_splits_classes_and_shapes(tmp_path: Path, layout: str) -> None:
    file = write_npz(tmp_path / "d.npz", layout=layout)
    dm = make(file, tmp_path, val_size=0.2)
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (72, 18, 30)
    description = dm.describe()
    assert description.class_names == {"label": CLASSES}
    assert description.input_shape == (3, 12, 12)
    with np.load(file) as arrays:
        x_test = arrays["x_test"] if layout == "nchw" else arrays["x_test"].transpose(0, 3, 1, 2)
        # The official test split keeps every image (in a seeded order).
        assert sorted(map(bytes, dm.data_test.images.numpy())) == sorted(map(bytes, x_test))
        pixels = torch.from_numpy(arrays["x_train"]).double() / 255
    mean = pixels.mean(dim=(0, 1, 2) if layout == "nhwc" else (0, 2, 3))
    assert description.mean == pytest.approx(mean.tolist(), abs=1e-4)


def test_float_images_grayscale_resize_and_own_validation_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((20, 10, 10)).astype(np.float32)  # (N, H, W) floats in [0, 1]
    y = np.arange(20) % 2
    file = tmp_path / "f.npz"
    np.savez(file, x_train=x, y_train=y, x_test=x[:6], y_test=y[:6], x_val=x[:4], y_val=y[:4])
    dm = make(file, tmp_path, channels=3, image_size=[8, 6])
    assert dm.describe().input_shape == (3, 8, 6)
    assert dm.describe().class_names == {"label": ["0", "1"]}  # no names in the file
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (20, 4, 6)
    assert dm.data_val.images.shape == (4, 3, 8, 6) and dm.data_val.images.dtype == torch.uint8


def test_decodes_once_then_loads_the_cache(tmp_path: Path, monkeypatch) -> None:
    file = write_npz(tmp_path / "d.npz")
    first = make(file, tmp_path)
    (cache,) = (tmp_path / "data" / ".decoded").glob("arrays-d-*.pt")
    monkeypatch.setattr(sources.ImageConverter, "batch", lambda *a: pytest.fail("decoded again"))
    second = make(file, tmp_path)
    assert torch.equal(first.data_test.images, second.data_test.images)
    assert second.describe() == first.describe()
    assert torch.load(cache, weights_only=True)["class_names"] == CLASSES


def test_per_sample_pipeline_matches_in_memory(tmp_path: Path) -> None:
    file = write_npz(tmp_path / "d.npz")
    eager, lazy = make(file, tmp_path), make(file, tmp_path, in_memory=False, cache=False)
    assert lazy.describe() == eager.describe()  # 90 images: the statistics sample is all of them
    x, y = lazy.data_test[0]
    assert x.dtype == torch.float32 and x.shape == (3, 12, 12)
    batch, labels = next(iter(lazy.test_dataloader()))
    expected, expected_labels = next(iter(eager.test_dataloader()))
    assert torch.allclose(batch, expected, atol=1e-5) and torch.equal(labels, expected_labels)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.zeros(4, int)},
            "lacks the arrays",
        ),
        ({"y_train": np.array([0, 1, 5, 1])}, r"labels must lie in \[0, 3\).*\[0, 5\]"),
        ({"x_train": np.zeros((4, 8, 8, 3), np.float32) + 2}, r"x_train: Float images .*\[0, 1\]"),
        ({"y_train": np.zeros(3, int)}, "y_train must be 4 integer labels"),
        ({"x_train": np.zeros((4, 5), np.uint8)}, "x_train has shape"),
    ],
)
def test_bad_arrays_are_named(tmp_path: Path, arrays: dict, message: str) -> None:
    base = {
        "x_train": np.zeros((4, 8, 8, 3), np.uint8),
        "y_train": np.array([0, 1, 2, 1]),
        "x_test": np.zeros((2, 8, 8, 3), np.uint8),
        "y_test": np.array([0, 1]),
        "class_names": np.array(CLASSES),
    }
    if "y_test" not in arrays and "x_train" in arrays and "y_train" in arrays:
        base = {k: v for k, v in base.items() if k in ("x_train", "y_train")}  # drop the test split
    np.savez(tmp_path / "bad.npz", **{**base, **arrays})
    with pytest.raises(SourceError, match=message):
        make(tmp_path / "bad.npz", tmp_path, cache=False)


def test_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    file = write_npz(tmp_path / "d.npz", class_names=np.array([{"a": 1}, None, 3], dtype=object))
    with pytest.raises(SourceError, match="Python objects"):
        make(file, tmp_path, cache=False)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"data.path=.*nope.npz: no such file"):
        make(tmp_path / "nope.npz", tmp_path)


def test_train_predict_export_from_the_config(tmp_path: Path) -> None:
    """One command's worth: a network with no shape keys trains on the arrays, and the
    checkpoint predicts (a split of the stored data config) and exports with the class names."""
    from src.export import export
    from src.predict import predict
    from src.train import train

    file = write_npz(tmp_path / "d.npz")
    cfg = compose_config(
        "train.yaml",
        [
            "data=arrays",
            f"data.path={file}",
            f"data.data_dir={tmp_path / 'data'}",
            "data.batch_size=16",
            "model.net.input_size=null",
            "model.net.output_size=null",
            "trainer.max_epochs=3",
            "trainer.accelerator=cpu",
            "logger=csv",
            "callbacks.rich_progress_bar=null",
            "extras.print_config=false",
            f"paths.output_dir={tmp_path / 'run'}",
            f"paths.log_dir={tmp_path / 'logs'}",
            "model.optimizer.lr=0.01",
        ],
    )
    HydraConfig().set_config(cfg)
    metrics, _ = train(cfg)
    assert cfg.model.net.input_size == 3 * 12 * 12 and cfg.model.net.output_size == 3
    assert float(metrics["test/acc"]) > 0.6  # chance is 1/3
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"

    # Paths outside the project are not stored in checkpoints: give them again.
    local = [f"+data.path={file}", f"+data.data_dir={tmp_path / 'data'}"]
    pcfg = compose_config("predict.yaml", [f"ckpt_path={ckpt}", "input=split:test", *local])
    with open_dict(pcfg):
        pcfg.paths.output_dir = str(tmp_path / "predict")
        pcfg.extras.print_config = False
    HydraConfig().set_config(pcfg)
    predict(pcfg)
    document = json.loads((tmp_path / "predict" / "predictions.json").read_text())
    names = {p["label"]["class"] for p in document["predictions"]}
    assert names <= set(CLASSES) and len(document["predictions"]) == 30

    ecfg = compose_config("export.yaml", [f"ckpt_path={ckpt}", "format=onnx"])
    with open_dict(ecfg):
        ecfg.paths.output_dir = str(tmp_path / "export")
        ecfg.extras.print_config = False
    HydraConfig().set_config(ecfg)
    export(ecfg)
    (sidecar,) = (tmp_path / "export").glob("*.json")
    exported = json.loads(sidecar.read_text())
    assert exported["class_names"] == {"label": CLASSES}
    assert exported["input_shape"] == [3, 12, 12]


def test_interrupted_run_on_arrays_resumes_exactly(cfg_train, tmp_path: Path) -> None:
    """The source datamodules share the exact mid-epoch resume of the built-in datasets."""
    from tests.test_resume import _interrupt_and_resume

    file = write_npz(tmp_path / "d.npz", n_train=480, n_test=128)
    cfg = cfg_train.copy()
    with open_dict(cfg):
        cfg.data = compose_config("train.yaml", ["data=arrays", f"data.path={file}"]).data
        cfg.data.data_dir = str(tmp_path / "data")
        cfg.model.net.input_size = 3 * 12 * 12
        cfg.model.net.output_size = 3
    _interrupt_and_resume(cfg, tmp_path, kill_step=18, ckpt_step=15, ckpt_epoch=1)
