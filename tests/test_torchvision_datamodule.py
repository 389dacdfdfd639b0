"""``data=torchvision``: torchvision dataset classes by name, on small files in their real formats."""

import hashlib
import json
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tv_datasets
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from PIL import Image

from src.data.components import sources
from src.data.components.sources import SourceError
from src.data.torchvision_datamodule import TorchvisionDataModule, TorchvisionSource
from tests.conftest import ROOT, compose_config, train_tiny
from tests.helpers.cifar_files import CIFAR10_CLASSES

FASHION = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (the MNIST format): magic 0x08 0x<ndim>, big-endian sizes, uint8 values."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_like(
    root: Path,
    folder: str = "FashionMNIST",
    n_train: int = 300,
    n_test: int = 100,
    prefixes: tuple[str, str] = ("train", "t10k"),
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``<root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``; a class-k image
    has a bright band at rows 2k..2k+2 (learnable), on noise."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, prefix, n in (("train", prefixes[0], n_train), ("test", prefixes[1], n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k : 2 * k + 3] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[split] = (images, labels)
    return written


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tv")
    return root, write_mnist_like(root)


def fashion_dm(root: Path, **kwargs) -> TorchvisionDataModule:
    defaults = dict(dataset="FashionMNIST", data_dir=str(root), val_size=50, batch_size=32)
    return TorchvisionDataModule(**{**defaults, **kwargs})


def test_fashion_mnist_idx_files(fashion, monkeypatch: pytest.MonkeyPatch) -> None:
    root, written = fashion
    dm = fashion_dm(root)
    dm.setup()
    assert dm.class_names == FASHION and dm.input_shape == (1, 28, 28)
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (250, 50, 100)
    test_images, test_labels = written["test"]
    assert torch.equal(dm.data_test.images[:, 0], torch.from_numpy(test_images))
    assert dm.data_test.labels.tolist() == test_labels.tolist()
    assert dm.describe().class_names == {"label": FASHION}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64

    # The array fast path gives what the class's own per-sample reading gives.
    source = dm.source
    fast = source.read_split("test", dm.convert)
    slow = sources.Source.read_split(source, "test", dm.convert)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])

    # A second datamodule loads the cache and decodes nothing.
    assert list((root / ".decoded").glob("torchvision-FashionMNIST-*.pt"))

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again instead of loading the cache")

    monkeypatch.setattr(TorchvisionSource, "read_split", no_decode)
    monkeypatch.setattr(TorchvisionSource, "_construct", no_decode)  # not even opened
    again = fashion_dm(root)
    again.setup()
    assert torch.equal(again.data_test.images, dm.data_test.images)
    assert torch.equal(again.data_train.images, dm.data_train.images)

    monkeypatch.undo()
    # Per sample (in_memory=false): the same test images, normalized by the same statistics.
    lazy = fashion_dm(root, in_memory=False)
    lazy.setup()
    assert len(lazy.data_test) == 100 and lazy.stats == dm.stats
    normalize = lazy.transform.per_sample(False)
    for i in (0, 57, 99):
        image, label = lazy.data_test[i]
        assert torch.equal(image, normalize(dm.data_test.images[i])) and label == test_labels[i]


def test_qmnist_label_tables_take_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QMNIST keeps 8 int32 attributes per image (``idx2-int`` files, the class first): read
    in one go, with the class as the label, as its own ``__getitem__`` gives it."""
    raw = tmp_path / "QMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(2)
    written = {}
    for split, n in (("train", 40), ("test", 12)):
        images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        table = rng.integers(0, 5000, (n, 8)).astype(">i4")
        table[:, 0] = rng.integers(0, 10, n)
        write_idx(raw / f"qmnist-{split}-images-idx3-ubyte", images)
        header = struct.pack(">I", 0x0C02) + struct.pack(">2I", *table.shape)  # 0x0C: int32
        (raw / f"qmnist-{split}-labels-idx2-int").write_bytes(header + table.tobytes())
        written[split] = (images, table[:, 0].astype(np.int64))

    def per_sample(*args, **kwargs):
        raise AssertionError("QMNIST holds arrays: read in one go, not sample by sample")

    monkeypatch.setattr(sources, "stack_samples", per_sample)
    dm = TorchvisionDataModule(dataset="QMNIST", data_dir=str(tmp_path), val_size=4, cache=False)
    dm.setup()
    images, labels = written["test"]
    assert torch.equal(dm.data_test.images[:, 0], torch.from_numpy(images))
    assert dm.data_test.labels.tolist() == labels.tolist()
    assert dm.data_test.labels.tolist() == [y for _, y in dm.source.split("test")]


def test_changed_files_decode_again(tmp_path: Path) -> None:
    """The cache key follows the files (names, sizes, times) and the settings, cheaply."""
    write_mnist_like(tmp_path, n_train=40, n_test=10)
    first = fashion_dm(tmp_path, val_size=5)
    first.setup()
    key = first.cache_key()
    named = fashion_dm(tmp_path, val_size=5, class_names=[f"c{i}" for i in range(10)])
    assert named.cache_key() != key
    written = write_mnist_like(tmp_path, n_train=30, n_test=10)  # other sizes and contents
    second = fashion_dm(tmp_path, val_size=5)
    assert second.cache_key() != key
    second.setup()
    assert len(second.data_train) == 25
    assert torch.equal(second.data_test.images[:, 0], torch.from_numpy(written["test"][0]))
    assert len(list((tmp_path / ".decoded").glob("torchvision-FashionMNIST-*.pt"))) == 1


def test_svhn_mat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    data = {}
    for split, n in (("train", 60), ("test", 20)):
        x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)  # SVHN's labels: 10 is the digit 0
        y[0] = 10
        path = tmp_path / f"{split}_32x32.mat"
        savemat(path, {"X": x, "y": y})
        # SVHN checks each file's MD5: expect this file's own instead of the real dataset's.
        url, filename, _ = tv_datasets.SVHN.split_list[split]
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        monkeypatch.setitem(tv_datasets.SVHN.split_list, split, [url, filename, md5])
        data[split] = (x, y)

    def per_sample(*args, **kwargs):
        raise AssertionError("SVHN holds arrays: read in one go, not sample by sample")

    monkeypatch.setattr(sources, "stack_samples", per_sample)
    dm = TorchvisionDataModule(dataset="SVHN", data_dir=str(tmp_path), val_size=10, cache=False)
    dm.setup()
    assert dm.class_names == [str(d) for d in range(10)] and dm.input_shape == (3, 32, 32)
    x, y = data["test"]
    assert torch.equal(dm.data_test.images, torch.from_numpy(x).permute(3, 2, 0, 1))
    assert dm.data_test.labels.tolist() == [int(v) % 10 for v in y[:, 0]]
    assert dm.data_test.labels[0] == 0 and len(dm.data_train) == 50


def test_cifar10_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CIFAR10's pickled batches (rows of 3072 bytes: red, green, blue planes) as torchvision
    reads them; it holds HWC arrays, converted in one go."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(3)
    written = {}
    names = [*(n for n, _ in tv_datasets.CIFAR10.train_list), "test_batch", "batches.meta"]
    for name in names:
        if name == "batches.meta":
            content = {"label_names": CIFAR10_CLASSES}
        else:
            images = rng.integers(0, 256, (6, 3, 32, 32)).astype(np.uint8)
            labels = rng.integers(0, 10, 6).tolist()
            content = {"data": images.reshape(6, -1), "labels": labels}
            written[name] = (images, labels)
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    # CIFAR10 checks each file's MD5 before unpickling it: expect these files' own.
    md5 = {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in names}
    cls = tv_datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[n, md5[n]] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["batches.meta"]})
    monkeypatch.setattr(sources, "stack_samples", None)  # the array path needs no per-sample read

    dm = TorchvisionDataModule(dataset="CIFAR10", data_dir=str(tmp_path), val_size=6, cache=False)
    dm.setup()
    assert dm.class_names == CIFAR10_CLASSES and dm.input_shape == (3, 32, 32)
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (24, 6, 6)
    images, labels = written["test_batch"]
    assert torch.equal(dm.data_test.images, torch.from_numpy(images))
    assert dm.data_test.labels.tolist() == labels


def test_dtd_image_files_with_validation_split(tmp_path: Path) -> None:
    """A class without one image array (DTD: JPEG files listed per split) is read per sample
    through the converter; its own validation split is the validation split."""
    data = tmp_path / "dtd" / "dtd"
    (data / "labels").mkdir(parents=True)
    classes = ["banded", "dotted", "striped"]
    rng = np.random.default_rng(2)
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        lines = []
        for name in classes:
            (data / "images" / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                size = (20 + 4 * i, 24)  # sizes differ: data.image_size makes them one
                pixels = rng.integers(0, 256, (*size, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(data / "images" / name / f"{split}_{i}.jpg")
                lines.append(f"{name}/{split}_{i}.jpg")
        (data / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")

    dm = TorchvisionDataModule(dataset="DTD", data_dir=str(tmp_path), image_size=16, cache=False)
    dm.setup()
    assert dm.class_names == classes and dm.has_val_split and dm.input_shape == (3, 16, 16)
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (12, 6, 9)
    assert dm.data_test.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    first = Image.open(data / "images" / "banded" / "test_0.jpg")
    assert torch.equal(dm.data_test.images[0], dm.convert(first))

    # The cache key reads DTD's own folder only: other files under data_dir do not change it.
    key = dm.cache_key()
    (tmp_path / "other_dataset.bin").write_bytes(b"unrelated")
    assert dm.cache_key() == key
    (data / "labels" / "test1.txt").write_text("banded/test_0.jpg\n")
    assert dm.cache_key() != key

    with pytest.raises(SourceError, match="set data.image_size"):
        TorchvisionDataModule(dataset="DTD", data_dir=str(tmp_path), cache=False).setup()


def test_unknown_class_names_close_ones() -> None:
    with pytest.raises(
        SourceError, match=r"data.dataset='FashionMnist'.*Did you mean FashionMNIST"
    ):
        TorchvisionDataModule(dataset="FashionMnist")
    with pytest.raises(SourceError, match="class name only"):
        TorchvisionDataModule(dataset="torchvision.datasets.MNIST")
    with pytest.raises(SourceError, match=r"data.kwargs.splt.*Did you mean split"):
        TorchvisionDataModule(dataset="EMNIST", kwargs={"splt": "balanced"})
    with pytest.raises(SourceError, match=r"needs data.kwargs.split"):
        TorchvisionDataModule(dataset="EMNIST")
    with pytest.raises(SourceError, match=r"data.kwargs.split is set by the datamodule"):
        TorchvisionDataModule(dataset="SVHN", kwargs={"split": "extra"})
    with pytest.raises(SourceError, match=r"has no train/test split"):
        TorchvisionDataModule(dataset="EuroSAT")


def test_missing_files_name_folder_and_files(tmp_path: Path, monkeypatch) -> None:
    dm = fashion_dm(tmp_path, download=False)
    with pytest.raises(SourceError) as err:
        dm.setup()
    message = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "data.download=true" in message

    def offline(self):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_datasets.FashionMNIST, "download", offline)
    with pytest.raises(SourceError, match=r"could not download.*offline") as err:
        fashion_dm(tmp_path, download=True).setup()
    assert str(tmp_path / "FashionMNIST" / "raw") in str(err.value)


def test_labels_out_of_range(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, n_train=40, n_test=10)
    labels = np.full(10, 12, dtype=np.uint8)
    write_idx(tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(SourceError, match=r"FashionMNIST test split: labels must lie in \[0, 10\)"):
        fashion_dm(tmp_path, val_size=5, cache=False).setup()


def test_emnist_split_argument_passes_through(tmp_path: Path) -> None:
    """EMNIST's ``split`` picks the variant; train/test are still chosen by ``train=``."""
    write_mnist_like(
        tmp_path,
        folder="EMNIST",
        n_train=30,
        n_test=10,
        prefixes=("emnist-balanced-train", "emnist-balanced-test"),
    )
    dm = TorchvisionDataModule(
        dataset="EMNIST", kwargs={"split": "balanced"}, data_dir=str(tmp_path), val_size=5
    )
    dm.setup()
    assert len(dm.class_names) == 47 and dm.class_names[:3] == ["0", "1", "2"]
    assert (len(dm.data_train), len(dm.data_test)) == (25, 10)


def test_train_predict_export(fashion, tmp_path: Path) -> None:
    """Train with the network's shape filled from the data, then predict and export."""
    root, written = fashion
    ckpt = train_tiny(
        tmp_path / "train",
        "data=torchvision",
        "data.dataset=FashionMNIST",
        f"data.data_dir={root}",
        "data.train_val_test_split=null",
        "data.val_size=50",
        "data.batch_size=32",
        "model=mnist",
        "model.net.input_size=null",
        "model.net.output_size=null",
    )
    meta = torch.load(ckpt, weights_only=True)["lhte"]
    assert meta["class_names"] == {"label": FASHION} and meta["input_shape"] == [1, 28, 28]

    from src.export import export
    from src.predict import predict

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(written["test"][0][i], "L").save(images / f"{i}.png")
    cfg = compose_config("predict.yaml", [f"ckpt_path={ckpt}", f"input={images}"])
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.paths.log_dir = str(tmp_path / "predict")
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.enable_progress_bar = False
        cfg.extras.print_config = False
    HydraConfig().set_config(cfg)
    metrics, objects = predict(cfg)
    assert metrics["num_predictions"] == 2
    assert all(row["label"]["class"] in FASHION for row in objects["rows"])

    pytest.importorskip("onnx", reason="ONNX export needs the export extra")
    import onnx

    cfg = compose_config("export.yaml", [f"ckpt_path={ckpt}", "format=onnx"])
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.paths.log_dir = str(tmp_path / "export")
        cfg.extras.print_config = False
    HydraConfig().set_config(cfg)
    _, objects = export(cfg)
    props = {p.key: p.value for p in onnx.load(str(objects["path"])).metadata_props}
    assert json.loads(props["lhte"])["class_names"] == {"label": FASHION}


MNIST_RAW = ROOT / "data" / "MNIST" / "raw"


@pytest.mark.skipif(
    not (MNIST_RAW / "train-images-idx3-ubyte").is_file(),
    reason=f"real MNIST is not at {MNIST_RAW}",
)
def test_real_mnist_matches_mnist_datamodule(tmp_path: Path) -> None:
    from src.data.mnist_datamodule import MNISTDataModule

    ours = TorchvisionDataModule(
        dataset="MNIST", data_dir=str(ROOT / "data"), val_size=5000, cache_dir=str(tmp_path)
    )
    reference = MNISTDataModule(data_dir=str(ROOT / "data"), download=False)
    ours.setup()
    reference.setup()
    for split in ("data_train", "data_val", "data_test"):
        a, b = getattr(ours, split), getattr(reference, split)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels), split
    assert ours.class_names == tv_datasets.MNIST.classes
