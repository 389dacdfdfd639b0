"""``data=hf``: Hugging Face datasets from parquet files and ``save_to_disk`` folders.

Every dataset here is written for real into ``tmp_path`` (PNG-encoded ``Image`` features and
``ClassLabel`` labels); decoded images are compared with the pixels that were written.
"""

import io
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

datasets = pytest.importorskip(
    "datasets", reason='data=hf needs the hf extra: pip install -e ".[hf]"'
)

from src.data.components.sources import SourceError  # noqa: E402
from src.data.hf_datamodule import HFDataModule, HFSource, check_hub_reachable  # noqa: E402
from tests.conftest import train_tiny  # noqa: E402

CLASSES = ["cat", "dog", "bird"]


def make_images(n: int, size: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images whose brightness depends on their label (learnable), and the labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    shape = (n, size, size, channels) if channels == 3 else (n, size, size)
    noise = rng.integers(0, 60, shape)
    level = (labels * 90).reshape(-1, *[1] * (len(shape) - 1))
    return (noise + level).astype(np.uint8), labels


def to_dataset(images: np.ndarray, labels: np.ndarray, label_feature=None) -> "datasets.Dataset":
    """PNG-encoded ``Image`` column + ``ClassLabel`` (or the given) label column."""

    def png(a: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(a).save(buffer, "PNG")
        return buffer.getvalue()

    features = datasets.Features(
        {
            "img": datasets.Image(),
            "fine_label": label_feature or datasets.ClassLabel(names=CLASSES),
        }
    )
    cells = [{"bytes": png(a), "path": None} for a in images]
    return datasets.Dataset.from_dict(
        {"img": cells, "fine_label": labels.tolist()}, features=features
    )


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train.parquet`` (96 RGB 16x16) and ``test.parquet`` (30) in one folder."""
    folder = tmp_path_factory.mktemp("parquet")
    for split, n, seed in (("train", 96, 0), ("test", 30, 1)):
        to_dataset(*make_images(n, 16, 3, seed)).to_parquet(str(folder / f"{split}.parquet"))
    return folder


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``save_to_disk`` DatasetDict (grayscale 12x12) with train/validation/test."""
    folder = tmp_path_factory.mktemp("saved") / "ds"
    splits = {
        s: to_dataset(*make_images(n, 12, 1, i))
        for i, (s, n) in enumerate((("train", 60), ("validation", 21), ("test", 15)))
    }
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


def datamodule(tmp_path: Path, path: str | Path, **kwargs) -> HFDataModule:
    dm = HFDataModule(path=str(path), data_dir=str(tmp_path), batch_size=8, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def test_parquet_folder(parquet_dir: Path, tmp_path: Path) -> None:
    dm = datamodule(tmp_path, parquet_dir)
    description = dm.describe()
    assert description.input_shape == (3, 16, 16)
    assert description.class_names == {"label": CLASSES}  # from the ClassLabel feature
    assert len(description.mean) == 3
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (86, 10, 30)
    images, labels = dm.decoded()["splits"]["test"]
    expected, expected_labels = make_images(30, 16, 3, 1)
    assert torch.equal(images, torch.from_numpy(expected).permute(0, 3, 1, 2))
    assert labels.tolist() == expected_labels.tolist()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 16, 16) and y.shape == (8,)
    assert (tmp_path / "hf").is_dir()  # Hugging Face's own cache stays under data_dir


def test_saved_dataset_uses_its_validation_split(saved_dir: Path, tmp_path: Path) -> None:
    dm = datamodule(tmp_path, saved_dir, image_size=8)
    assert dm.has_val_split
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (60, 21, 15)
    assert dm.input_shape == (1, 8, 8)
    images, labels = dm.decoded()["splits"]["val"]
    assert images.shape == (21, 1, 8, 8)
    assert labels.tolist() == make_images(21, 12, 1, 1)[1].tolist()


def test_data_files_and_split_mapping(parquet_dir: Path, saved_dir: Path, tmp_path: Path) -> None:
    files = {"train": str(parquet_dir / "train.parquet"), "test": str(parquet_dir / "test.parquet")}
    dm = datamodule(tmp_path / "a", "parquet", data_files=files, channels=1)
    assert dm.input_shape == (1, 16, 16) and len(dm.data_test) == 30
    # validation as the test split; no validation split: val_size is split off the training split
    dm = datamodule(tmp_path / "b", saved_dir, splits={"val": None, "test": "validation"})
    assert not dm.has_val_split
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (54, 6, 21)


def test_cache_is_reused(
    parquet_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = datamodule(tmp_path, parquet_dir)
    assert list((tmp_path / ".decoded").glob("hf-*.pt"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is current")

    monkeypatch.setattr(HFSource, "read_split", no_decoding)
    second = datamodule(tmp_path, parquet_dir)
    for split in ("train", "test"):
        assert torch.equal(
            second.decoded()["splits"][split][0], first.decoded()["splits"][split][0]
        )
    assert second.class_names == CLASSES


def test_per_sample_pipeline(saved_dir: Path, tmp_path: Path) -> None:
    dm = datamodule(tmp_path, saved_dir, in_memory=False)
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (60, 21, 15)
    image, label = dm.data_test[3]
    expected, labels = make_images(15, 12, 1, 2)
    assert image.shape == (1, 12, 12) and label == labels[3]
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (8, 1, 12, 12) and x.dtype == torch.float32
    assert y.tolist() == labels[:8].tolist()


def test_string_labels_become_sorted_class_names(tmp_path: Path) -> None:
    images, labels = make_images(12, 8, 1, 0)
    names = np.array(CLASSES)[labels]
    ds = to_dataset(images, np.zeros(12, dtype=int), datasets.Value("string"))
    ds = ds.remove_columns("fine_label").add_column("fine_label", names.tolist())
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "ds"))
    dm = datamodule(tmp_path, tmp_path / "ds", val_size=2)
    assert dm.class_names == sorted(CLASSES)
    decoded = dm.decoded()["splits"]["test"][1]
    assert [dm.class_names[i] for i in decoded] == names.tolist()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_column": "pixels"}, "data.image_column=pixels: no such column; the dataset has"),
        ({"label_column": "digit"}, "['img', 'fine_label']"),
        ({"splits": {"test": "holdout"}}, "data.splits.test=holdout: no such split"),
        ({"class_names": ["a", "b"]}, "labels must lie in [0, 2)"),
        ({"kwargs": {"trust_remote_code": True}}, "never runs a dataset's code"),
    ],
)
def test_bad_settings(saved_dir: Path, tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(SourceError) as err:
        datamodule(tmp_path, saved_dir, **kwargs)
    assert message in str(err.value)


def test_missing_test_split_names_the_splits(tmp_path: Path) -> None:
    ds = to_dataset(*make_images(6, 8, 1, 0))
    datasets.DatasetDict({"train": ds, "extra": ds}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(
        SourceError, match=r"splits \['train', 'extra'\] but no test split.*data.splits"
    ):
        datamodule(tmp_path, tmp_path / "ds")


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        datamodule(tmp_path, tmp_path / "missing")
    script = tmp_path / "mine"
    script.mkdir()
    (script / "mine.py").write_text("raise SystemExit('must never run')")
    with pytest.raises(SourceError, match="loading script"):
        datamodule(tmp_path, script)


def test_offline_hub_says_how_to_use_a_local_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SourceError, match="hub is unreachable.*save_to_disk"):
        datamodule(tmp_path, "someone/no-such-dataset")


def test_unreachable_hub_fails_within_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub id with no network: one error naming the hub, the key and the fix, in seconds
    rather than the library's ~25 s of retries (a closed local port stands in for the hub)."""
    import time

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(
        SourceError, match=r"hub \(http://127.0.0.1:9\).*hub_timeout=2.*save_to_disk"
    ):
        HFSource("someone/no-such-dataset", cache_dir=tmp_path, hub_timeout=2)
    assert time.perf_counter() - start < 5
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # through a proxy: not checked here
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    check_hub_reachable("someone/no-such-dataset", timeout=2)


def test_missing_extra_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(SourceError, match=r'pip install -e "\.\[hf\]"'):
        HFSource("anything")


def test_train_predict_export(parquet_dir: Path, tmp_path: Path) -> None:
    """A network with null shape keys trains on the parquet folder; its checkpoint predicts
    image files and exports to ONNX with the dataset's class names and shape."""
    from hydra.core.hydra_config import HydraConfig

    from src.export import export
    from tests.test_predict import run_predict

    ckpt = train_tiny(
        tmp_path / "run",
        "data=hf",
        f"data.path={parquet_dir}",
        f"data.data_dir={tmp_path / 'data'}",
        "data.train_val_test_split=null",
        "data.batch_size=16",
        "model=mnist",
        "model.net.input_size=null",
        "model.net.output_size=null",
    )
    images, labels = make_images(2, 16, 3, 5)
    files = tmp_path / "files"
    files.mkdir()
    for i, a in enumerate(images):
        Image.fromarray(a).save(files / f"{i}.png")
    rows, doc = run_predict(tmp_path / "predict", ckpt, files)
    assert len(rows) == 2 and all(r["label"] in CLASSES for r in rows)
    assert doc["class_names"] == {"label": CLASSES}
    pytest.importorskip("onnxscript", reason="ONNX export needs the export extra")
    pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra")
    from tests.test_export import export_cfg, run_onnx

    cfg = export_cfg(tmp_path / "export", ckpt, "onnx")
    HydraConfig().set_config(cfg)
    metrics, objects = export(cfg)
    assert metrics["max_abs_diff"] < 1e-4
    logits = run_onnx(objects["path"], torch.zeros(4, 3, 16, 16))["label"]
    assert logits.shape == (4, len(CLASSES))


def test_pixel_array_column(tmp_path: Path) -> None:
    """Images stored as uint8 arrays (no encoded files) are read in numpy batches."""
    images, labels = make_images(20, 8, 3, 0)
    features = datasets.Features(
        {"image": datasets.Array3D((8, 8, 3), "uint8"), "label": datasets.Value("int64")}
    )
    ds = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "ds"))
    dm = datamodule(tmp_path, tmp_path / "ds", val_size=4)
    assert dm.class_names == ["0", "1", "2"]  # no ClassLabel: numbers up to the largest label
    decoded = dm.decoded()["splits"]["test"][0]
    assert torch.equal(decoded, torch.from_numpy(images).permute(0, 3, 1, 2))
    lazy = datamodule(tmp_path / "lazy", tmp_path / "ds", val_size=4, in_memory=False)
    assert lazy.data_test[5][0].shape == (3, 8, 8)


def test_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    small, big = make_images(4, 8, 3, 0)[0], make_images(4, 12, 3, 1)[0]
    labels = np.arange(4) % 3
    ds = datasets.concatenate_datasets([to_dataset(small, labels), to_dataset(big, labels)])
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(SourceError, match="set data.image_size"):
        datamodule(tmp_path, tmp_path / "ds", val_size=2)
    dm = datamodule(tmp_path, tmp_path / "ds", val_size=2, image_size=10)
    assert dm.decoded()["splits"]["train"][0].shape == (8, 3, 10, 10)


def test_split_without_the_label_column(tmp_path: Path) -> None:
    ds = to_dataset(*make_images(6, 8, 1, 0))
    test = ds.remove_columns("fine_label")
    datasets.DatasetDict({"train": ds, "test": test}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(
        SourceError, match=r"test split \(test\) lacks the columns \['fine_label'\]"
    ):
        datamodule(tmp_path, tmp_path / "ds")


def test_imagefolder_layout(tmp_path: Path) -> None:
    """``train/<class>/*.png`` + ``test/<class>/*.png``: class names from the folder names."""
    images, labels = make_images(12, 8, 3, 0)
    for split in ("train", "test"):
        for i, (a, label) in enumerate(zip(images, labels, strict=True)):
            folder = tmp_path / "images" / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(folder / f"{i}.png")
    dm = datamodule(tmp_path, tmp_path / "images", val_size=3)
    assert dm.class_names == sorted(CLASSES)
    decoded, decoded_labels = dm.decoded()["splits"]["test"]
    assert decoded.shape == (12, 3, 8, 8)
    assert sorted(decoded_labels.tolist()) == sorted(
        sorted(CLASSES).index(CLASSES[i]) for i in labels
    )


def test_hostile_cells_are_refused(tmp_path: Path) -> None:
    """A decompression bomb stored in a dataset is refused from its header; an image given
    only by URL is not fetched."""
    from src.data.components.hf_images import ImageCells
    from tests.helpers.huge_png import write_huge_png

    bomb = write_huge_png(tmp_path / "bomb.png", 9000, 9000).read_bytes()
    ds = datasets.Dataset.from_dict(
        {"img": [{"bytes": bomb, "path": None}] * 2, "fine_label": [0, 1]},
        features=datasets.Features(
            {"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=CLASSES)}
        ),
    )
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(SourceError, match="9000 x 9000 = 81,000,000 pixels.*max_image_pixels"):
        datamodule(tmp_path, tmp_path / "ds", val_size=1)
    cells = ImageCells("img", datasets.Image(), 1000)
    with pytest.raises(SourceError, match="URLs are not fetched"):
        cells.decode({"bytes": None, "path": "https://example.com/a.png"})


def test_images_stored_by_path_are_read_only_inside_the_dataset(tmp_path: Path) -> None:
    """A parquet file whose cells name an image by path alone (as ``to_parquet`` writes them):
    read when the file is inside the dataset's folder, refused (naming the path) when it is
    elsewhere on the machine or reached through a link."""
    images, labels = make_images(4, 8, 3, 0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for i, a in enumerate(images):
        Image.fromarray(a).save(elsewhere / f"{i}.png")

    def dataset(name: str, place: Callable[[Path, Path], None] | None) -> Path:
        """``<name>/train.parquet`` + ``test.parquet``, whose cells name ``<name>/images/*.png``
        (put there by ``place``), or the files of ``elsewhere`` when ``place`` is None."""
        folder = tmp_path / name
        (folder / "images").mkdir(parents=True)
        files = [folder / "images" / f"{i}.png" for i in range(4)]
        for i, file in enumerate(files):
            if place:
                place(elsewhere / f"{i}.png", file)
        files = files if place else sorted(elsewhere.glob("*.png"))
        cells = {"img": [{"bytes": None, "path": str(f)} for f in files], "fine_label": labels}
        features = datasets.Features(
            {"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=CLASSES)}
        )
        for split in ("train", "test"):
            datasets.Dataset.from_dict(cells, features=features).to_parquet(
                str(folder / f"{split}.parquet")
            )
        return folder

    good = dataset("good", lambda source, file: shutil.copy(source, file))
    decoded, _ = datamodule(tmp_path / "a", good, val_size=1).decoded()["splits"]["test"]
    assert torch.equal(decoded[0], torch.from_numpy(images[0]).permute(2, 0, 1))

    linked = dataset("linked", lambda source, file: file.symlink_to(source))
    with pytest.raises(SourceError, match=r"stored by its path .*0\.png.* outside the dataset"):
        datamodule(tmp_path / "b", linked, val_size=1)
    moved = dataset("moved", None)
    with pytest.raises(SourceError, match=r"stored by its path .*elsewhere.* outside the dataset"):
        datamodule(tmp_path / "c", moved, val_size=1)
