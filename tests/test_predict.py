"""Checkpoint metadata and ``src/predict.py``: image files, folders and dataset splits.

A tiny model is trained once per test session (tests/conftest.py) (a few batches of real MNIST), single-head and
multihead; predictions are checked against the module's own outputs on the same inputs.
"""

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

from src.data.cifar10_datamodule import CIFAR10DataModule
from src.data.components.image_folder import ImageTooLargeError
from src.data.components.mnist_source import load_mnist, raw_dir
from src.models.build import load_model_from_checkpoint
from src.models.classifier_module import METADATA_KEY, head_class_names
from src.predict import SPLIT_PREFIX, ImageFiles, predict, split_data
from tests.conftest import MULTIHEAD, ROOT, compose_config
from tests.helpers.cifar_files import CIFAR10_CLASSES, write_cifar10
from tests.helpers.huge_png import write_huge_png


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST test digits saved as files of other sizes and modes (grayscale, RGB, RGBA, 16-bit)."""
    folder = tmp_path_factory.mktemp("images")
    images, _ = load_mnist(raw_dir(ROOT / "data"), train=False)
    pixels = [images[i, 0].numpy() for i in range(6)]
    Image.fromarray(pixels[0], "L").save(folder / "a_gray28.png")
    Image.fromarray(pixels[1], "L").resize((56, 56)).convert("RGB").save(folder / "b_rgb56.png")
    rgba = Image.fromarray(pixels[2], "L").resize((40, 30)).convert("RGBA")
    rgba.save(folder / "c_rgba.png")
    Image.fromarray(pixels[3], "L").convert("RGB").save(folder / "d.jpg", quality=95)
    nested = folder / "sub"
    nested.mkdir()
    Image.fromarray(pixels[4], "L").save(nested / "e.bmp")  # Pillow fallback
    wide = (pixels[5].astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(wide).save(nested / "f_16bit.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def predict_cfg(out_dir: Path, ckpt: Path, input_: str | Path, *overrides: str) -> DictConfig:
    """``configs/predict.yaml`` for ``ckpt`` and ``input_``, writing into ``out_dir``."""
    cfg = compose_config(
        "predict.yaml", [f"ckpt_path={ckpt}", f"input={input_}", "batch_size=4", *overrides]
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.log_dir = str(out_dir)
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.enable_progress_bar = False
        cfg.extras.print_config = False
    return cfg


def run_predict(out_dir: Path, ckpt: Path, input_: str | Path) -> tuple[list[dict], dict]:
    """Predict and read back ``(CSV rows, JSON document)``."""
    cfg = predict_cfg(out_dir, ckpt, input_)
    HydraConfig().set_config(cfg)
    predict(cfg)
    with (out_dir / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((out_dir / "predictions.json").read_text())


def module_argmax(ckpt: Path, paths: list[Path]) -> dict[str, list[int]]:
    """The module's own predictions on the same preprocessed files, per head."""
    module, metadata = load_model_from_checkpoint(ckpt)
    batch = torch.stack([ImageFiles(paths, metadata)[i][0] for i in range(len(paths))])
    assert batch.shape[1:] == tuple(metadata["input_shape"])
    with torch.no_grad():
        return {h: v.argmax(-1).tolist() for h, v in module.forward_heads(batch).items()}


# ------------------------------------------------------------------ metadata
def test_checkpoint_holds_metadata(single_ckpt: Path) -> None:
    checkpoint = torch.load(single_ckpt, weights_only=True)
    meta = checkpoint[METADATA_KEY]
    assert meta["model"]["_target_"] == "src.models.classifier_module.ClassifierLitModule"
    assert meta["heads"] == {"label": 10}
    assert meta["class_names"] == {"label": [str(d) for d in range(10)]}
    assert meta["normalize"] == {"mean": [0.1307], "std": [0.3081]}
    assert meta["input_shape"] == [1, 28, 28]
    assert meta["data"]["_target_"] == "src.data.mnist_datamodule.MNISTDataModule"

    module, loaded = load_model_from_checkpoint(single_ckpt)
    assert loaded == meta and not module.training
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(module.state_dict()[key], value), key


def test_multihead_checkpoint_names_every_head(multi_ckpt: Path) -> None:
    meta = torch.load(multi_ckpt, weights_only=True)[METADATA_KEY]
    assert meta["heads"] == MULTIHEAD
    assert list(meta["class_names"]) == list(MULTIHEAD)
    assert meta["class_names"]["digit"] == [str(d) for d in range(10)]
    assert [len(meta["class_names"][h]) for h in MULTIHEAD] == list(MULTIHEAD.values())
    assert meta["class_names"]["thickness"][0] == "very thin"
    assert meta["class_names"]["smoothness"] == ["angular", "medium", "smooth"]


def test_class_names_per_head_from_cifar_datamodule(tmp_path: Path) -> None:
    """Names come from the datamodule's ``label_names``; unknown ones fall back to indices."""
    write_cifar10(tmp_path, n_train=20, n_test=10)
    kwargs = dict(data_dir=str(tmp_path), train_val_test_split=[10, 5, 10], download=False)
    single = CIFAR10DataModule(**kwargs)
    multi = CIFAR10DataModule(heads=["class", "kind"], **kwargs)
    for datamodule in (single, multi):
        datamodule.setup()
    assert head_class_names(single, {"label": 10}) == {"label": CIFAR10_CLASSES}
    names = head_class_names(multi, {"class": 10, "kind": 2, "extra": 3})
    assert names == {
        "class": CIFAR10_CLASSES,
        "kind": ["animal", "vehicle"],
        "extra": ["0", "1", "2"],
    }
    assert head_class_names(None, {"label": 2}) == {"label": ["0", "1"]}


def test_load_rejects_bad_checkpoints(single_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_model_from_checkpoint(tmp_path / "missing.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(single_ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_model_from_checkpoint(truncated)

    checkpoint = torch.load(single_ckpt, weights_only=True)
    without = tmp_path / "without.ckpt"
    torch.save({k: v for k, v in checkpoint.items() if k != METADATA_KEY}, without)
    with pytest.raises(ValueError, match="no 'lhte' metadata"):
        load_model_from_checkpoint(without)
    # A crafted config must not get to call arbitrary functions.
    checkpoint[METADATA_KEY]["model"]["net"]["_target_"] = "os.system"
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    with pytest.raises(ValueError, match="os.system"):
        load_model_from_checkpoint(crafted)


# ------------------------------------------------------------------- predict
def test_predict_folder(single_ckpt: Path, image_folder: Path, tmp_path: Path) -> None:
    rows, doc = run_predict(tmp_path, single_ckpt, image_folder)
    paths = sorted(p for p in image_folder.rglob("*") if p.suffix != ".txt" and p.is_file())
    assert [r["source"] for r in rows] == [str(p) for p in paths]  # recursive, sorted, images only
    assert list(rows[0]) == ["index", "source", "label", "label_index", "label_prob"]
    probs = [float(r["label_prob"]) for r in rows]
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert [int(r["label_index"]) for r in rows] == module_argmax(single_ckpt, paths)["label"]
    assert all(r["label"] == r["label_index"] for r in rows)  # MNIST class names are the digits
    assert doc["class_names"] == {"label": [str(d) for d in range(10)]}
    assert [p["label"]["prob"] for p in doc["predictions"]] == pytest.approx(probs)


def test_predict_single_file(single_ckpt: Path, image_folder: Path, tmp_path: Path) -> None:
    image = image_folder / "b_rgb56.png"  # RGB and twice the size: converted and resized
    rows, doc = run_predict(tmp_path, single_ckpt, image)
    assert len(rows) == 1 and rows[0]["source"] == str(image)
    assert int(rows[0]["label_index"]) == module_argmax(single_ckpt, [image])["label"][0]
    assert doc["input"] == str(image)


def test_predict_split(single_ckpt: Path, tmp_path: Path) -> None:
    """Split predictions equal the module's argmax on the datamodule's own normalized batch."""
    rows, _ = run_predict(tmp_path, single_ckpt, f"{SPLIT_PREFIX}test")
    assert len(rows) == 200  # the stored datamodule's (seeded) test split
    assert list(rows[0])[-1] == "label_target"
    assert rows[0]["source"] == "test/0"
    module, meta = load_model_from_checkpoint(single_ckpt)
    datamodule, data = split_data(predict_cfg(tmp_path, single_ckpt, "x"), meta, "test")
    with torch.no_grad():
        logits = module.forward_heads(datamodule.transform(data.images))["label"]
    assert [int(r["label_index"]) for r in rows] == logits.argmax(-1).tolist()
    assert [int(r["label_target"]) for r in rows] == data.labels.tolist()
    probs = logits.softmax(-1).max(-1).values.tolist()
    assert [float(r["label_prob"]) for r in rows] == pytest.approx(probs, abs=1e-6)


def test_predict_multihead_gives_every_head(
    multi_ckpt: Path, image_folder: Path, tmp_path: Path
) -> None:
    rows, doc = run_predict(tmp_path / "files", multi_ckpt, image_folder)
    columns = ["index", "source"]
    columns += [f"{h}{s}" for h in MULTIHEAD for s in ("", "_index", "_prob")]
    assert list(rows[0]) == columns
    paths = [Path(r["source"]) for r in rows]
    expected = module_argmax(multi_ckpt, paths)
    for head in MULTIHEAD:
        assert [int(r[f"{head}_index"]) for r in rows] == expected[head]
        assert all(0.0 <= float(r[f"{head}_prob"]) <= 1.0 for r in rows)
        assert all(set(p[head]) == {"class", "index", "prob"} for p in doc["predictions"])

    rows, _ = run_predict(tmp_path / "split", multi_ckpt, f"{SPLIT_PREFIX}val")
    assert len(rows) == 100
    assert all(f"{h}_target" in rows[0] for h in MULTIHEAD)


@pytest.mark.parametrize(
    ("input_", "message"),
    [("no/such/file.png", "not an image file, a folder"), (f"{SPLIT_PREFIX}holdout", "no split")],
)
def test_predict_bad_input(single_ckpt: Path, tmp_path: Path, input_: str, message: str) -> None:
    cfg = predict_cfg(tmp_path, single_ckpt, input_)
    HydraConfig().set_config(cfg)
    with pytest.raises(ValueError, match=message):
        predict(cfg)


def test_predict_empty_folder(single_ckpt: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    cfg = predict_cfg(tmp_path, single_ckpt, empty)
    HydraConfig().set_config(cfg)
    with pytest.raises(ValueError, match="holds no image files"):
        predict(cfg)


def test_predict_refuses_huge_image_before_decoding(single_ckpt: Path, tmp_path: Path) -> None:
    """A small PNG that would decode into 400 MB (gray) fails from its header, naming the key."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("L", (28, 28)).save(folder / "a.png")
    bomb = write_huge_png(folder / "b_bomb.png")
    cfg = predict_cfg(tmp_path, single_ckpt, folder)
    HydraConfig().set_config(cfg)
    start = time.monotonic()
    with pytest.raises(ImageTooLargeError) as err:
        predict(cfg)
    assert time.monotonic() - start < 30  # includes loading the checkpoint
    message = str(err.value)
    assert str(bomb) in message and "400,000,000 pixels" in message
    assert "64,000,000 (max_image_pixels)" in message and "max_image_pixels=" in message

    # The limit is a setting: lowered below a 28 x 28 image, that image is refused too.
    cfg = predict_cfg(tmp_path, single_ckpt, folder / "a.png", "max_image_pixels=100")
    HydraConfig().set_config(cfg)
    with pytest.raises(ImageTooLargeError, match="784 pixels"):
        predict(cfg)


def test_predict_skips_unreadable_files_on_request(single_ckpt: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("L", (28, 28), 255).save(folder / "a.png")
    (folder / "b_broken.png").write_bytes(b"not a png")
    bomb = write_huge_png(folder / "c_bomb.png")

    cfg = predict_cfg(tmp_path / "raise", single_ckpt, folder)  # default: on_error=raise
    HydraConfig().set_config(cfg)
    with pytest.raises(ValueError, match=f"Cannot read image {folder / 'b_broken.png'}"):
        predict(cfg)

    cfg = predict_cfg(tmp_path / "skip", single_ckpt, folder, "on_error=skip")
    HydraConfig().set_config(cfg)
    metrics, _ = predict(cfg)
    assert metrics["num_predictions"] == 1
    doc = json.loads((tmp_path / "skip" / "predictions.json").read_text())
    assert [p["source"] for p in doc["predictions"]] == [str(folder / "a.png")]
    skipped = {s["source"]: s["reason"] for s in doc["skipped"]}
    assert list(skipped) == [str(folder / "b_broken.png"), str(bomb)]
    assert "Cannot read image" in skipped[str(folder / "b_broken.png")]
    assert "max_image_pixels" in skipped[str(bomb)]


def test_predict_command_line(single_ckpt: Path, image_folder: Path, tmp_path: Path) -> None:
    """``python src/predict.py`` writes both files into its own run folder."""
    result = subprocess.run(
        [
            sys.executable,
            "src/predict.py",
            f"ckpt_path={single_ckpt}",
            f"input={image_folder / 'a_gray28.png'}",
            f"paths.log_dir={tmp_path}",
            "trainer.accelerator=cpu",
            "extras.print_config=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = list((tmp_path / "predict" / "runs").iterdir())
    assert len(run_dirs) == 1
    assert (run_dirs[0] / "predictions.csv").read_text().count("\n") == 2
    assert json.loads((run_dirs[0] / "predictions.json").read_text())["predictions"]


def test_predict_without_input_names_the_key(tmp_path: Path, single_ckpt: Path) -> None:
    """No omegaconf traceback: one error saying which key to add, with an example."""
    cfg = compose_config("predict.yaml", [f"ckpt_path={single_ckpt}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.extras.print_config = False
    HydraConfig().set_config(cfg)
    with pytest.raises(ValueError, match=r"input must be set\. Fix: add input=<image\|folder"):
        predict(cfg)
    assert not (tmp_path / "predictions.csv").exists()


def test_export_without_checkpoint_names_the_key(tmp_path: Path) -> None:
    from src.export import export

    cfg = compose_config("export.yaml")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.extras.print_config = False
    HydraConfig().set_config(cfg)
    with pytest.raises(ValueError, match=r"ckpt_path must be set\. Fix: add ckpt_path="):
        export(cfg)


def test_predict_split_on_another_machine(single_ckpt: Path, tmp_path: Path) -> None:
    """A checkpoint whose data_dir was outside the training project (stored as a placeholder)
    reads the split from this machine's paths.data_dir, or from a +data.data_dir override."""
    from src.utils.local_paths import LOCAL_PATH

    _, meta = load_model_from_checkpoint(single_ckpt)
    meta = {**meta, "data": {**meta["data"], "data_dir": LOCAL_PATH}}
    for overrides in ([], [f"+data.data_dir={ROOT / 'data'}"]):
        cfg = predict_cfg(tmp_path, single_ckpt, "x", *overrides)
        datamodule, data = split_data(cfg, meta, "test")
        assert Path(datamodule.hparams.data_dir) == ROOT / "data" and len(data.labels) == 200
    cfg = predict_cfg(tmp_path, single_ckpt, "x")
    with pytest.raises(ValueError, match=r"\+data.cache_dir="):
        split_data(cfg, {**meta, "data": {**meta["data"], "cache_dir": LOCAL_PATH}}, "test")
