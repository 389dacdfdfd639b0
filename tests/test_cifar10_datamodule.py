"""CIFAR-10 datamodule on small files written in the official on-disk format (no downloads)."""

import hashlib
import pickle
import tarfile
from pathlib import Path
from types import SimpleNamespace

import hydra
import numpy as np
import pytest
import torch

from src.data.cifar10_datamodule import VEHICLES, CIFAR10DataModule
from src.data.components import cifar_source
from src.data.components.cifar_source import CIFAR10, CIFARUnavailableError
from tests.conftest import compose_config
from tests.helpers.cifar_files import CIFAR10_CLASSES, write_cifar10

SPLIT = [40, 10, 20]


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A data_dir with ``cifar-10-batches-py`` (50 training and 20 test images)."""
    root = tmp_path_factory.mktemp("cifar10")
    return root, write_cifar10(root, n_train=50, n_test=20)


def make(root: Path, **kwargs) -> CIFAR10DataModule:
    dm = CIFAR10DataModule(data_dir=str(root), train_val_test_split=SPLIT, batch_size=8, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def digests(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in images}


def test_reads_the_official_layout_exactly(cifar10_dir) -> None:
    """Rows of 3072 bytes (R, G, B planes) become (3, 32, 32) images, in file order."""
    root, written = cifar10_dir
    dm = CIFAR10DataModule(data_dir=str(root))
    images, labels = dm.load_split(train=True)
    assert images.dtype == torch.uint8 and images.shape == (50, 3, 32, 32)
    assert labels.dtype == torch.int64
    assert torch.equal(images, torch.from_numpy(written["train_images"]))
    assert torch.equal(labels, torch.from_numpy(written["train_labels"]))
    test_images, test_labels = dm.load_split(train=False)
    assert torch.equal(test_images, torch.from_numpy(written["test_images"]))
    assert torch.equal(test_labels, torch.from_numpy(written["test_labels"]))


def test_splits_sizes_and_no_leak(cifar10_dir) -> None:
    """Train/val are a split of the training files; test is exactly the official test file."""
    root, written = cifar10_dir
    dm = make(root)
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (40, 10, 20)
    train, val = digests(dm.data_train.images), digests(dm.data_val.images)
    assert not train & val
    assert train | val == digests(torch.from_numpy(written["train_images"]))
    assert torch.equal(dm.data_test.images, torch.from_numpy(written["test_images"]))
    for data in (dm.data_train, dm.data_val, dm.data_test):
        assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
        assert 0 <= int(data.labels.min()) and int(data.labels.max()) < 10
    assert dm.heads == {"label": 10} and dm.num_classes == 10
    assert dm.class_names == CIFAR10_CLASSES  # from batches.meta
    assert dm.input_shape == (3, 32, 32)


def test_split_follows_split_seed(cifar10_dir) -> None:
    root, _ = cifar10_dir
    first, second, other = make(root), make(root), make(root, split_seed=7)
    assert digests(first.data_val.images) == digests(second.data_val.images)
    assert digests(other.data_val.images) != digests(first.data_val.images)


def test_too_large_split_is_refused(cifar10_dir) -> None:
    root, _ = cifar10_dir
    with pytest.raises(ValueError, match="more than the dataset has"):
        CIFAR10DataModule(data_dir=str(root), train_val_test_split=[45_000, 5_000, 10_000]).setup()


def test_kind_head_marks_vehicles(cifar10_dir) -> None:
    """label_mode=both: {class, kind}; kind is 1 exactly for airplane, automobile, ship, truck."""
    root, _ = cifar10_dir
    dm = make(root, label_mode="both")
    assert dm.heads == {"class": 10, "kind": 2}
    labels = dm.data_train.labels
    assert set(labels) == {"class", "kind"}
    vehicle_ids = torch.tensor([CIFAR10_CLASSES.index(v) for v in VEHICLES])
    assert torch.equal(labels["kind"], torch.isin(labels["class"], vehicle_ids).long())
    assert dm.label_names["kind"] == ["animal", "vehicle"]
    _x, y = next(iter(dm.train_dataloader()))
    assert set(y) == {"class", "kind"}


def test_explicit_heads_give_dict_labels(cifar10_dir) -> None:
    root, _ = cifar10_dir
    dm = make(root, heads=["kind"])
    assert dm.heads == {"kind": 2}
    assert set(dm.data_test.labels) == {"kind"}
    with pytest.raises(ValueError, match="heads="):
        CIFAR10DataModule(data_dir=str(root), heads=["fine"])
    with pytest.raises(ValueError, match="label_mode='fine'"):
        CIFAR10DataModule(data_dir=str(root), label_mode="fine")


def test_augmentation_only_while_training(cifar10_dir) -> None:
    """The same batch: identical normalized output for val/test, randomly changed for training."""
    root, _ = cifar10_dir
    dm = make(root, augment={"crop_padding": 4, "hflip": True})
    x, y = dm.data_train.batch(range(40))
    dm.trainer = SimpleNamespace(training=False)
    plain, _ = dm.on_after_batch_transfer((x, y), 0)
    again, _ = dm.on_after_batch_transfer((x, y), 0)
    assert plain.dtype == torch.float32 and torch.equal(plain, again)
    mean = torch.tensor(CIFAR10DataModule.mean).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10DataModule.std).view(1, 3, 1, 1)
    assert torch.allclose(plain, (x.float() / 255 - mean) / std, atol=1e-6)
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    augmented, _ = dm.on_after_batch_transfer((x, y), 0)
    changed = (augmented != plain).flatten(1).any(1)
    assert augmented.shape == plain.shape and changed.sum() > 20  # crops and flips


def test_per_sample_pipeline(cifar10_dir) -> None:
    root, _ = cifar10_dir
    dm = make(root, in_memory=False)
    image, label = dm.data_val[0]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert isinstance(int(label), int)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,)


def test_data_config_instantiates(cifar10_dir) -> None:
    """configs/data/cifar10.yaml: official split, CIFAR-10 statistics, crop + flip for training."""
    root, _ = cifar10_dir
    cfg = compose_config("train.yaml", ["data=cifar10", f"data.data_dir={root}"])
    assert list(cfg.data.train_val_test_split) == [45_000, 5_000, 10_000]
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, CIFAR10DataModule)
    assert dm.transform.crop_padding == 4 and dm.transform.hflip
    assert dm.transform.mean.flatten().tolist() == pytest.approx([0.4914, 0.4822, 0.4465])
    assert dm.transform.std.flatten().tolist() == pytest.approx([0.2470, 0.2435, 0.2616])
    multi = compose_config("train.yaml", ["data=multihead_cifar10", f"data.data_dir={root}"])
    assert hydra.utils.instantiate(multi.data).heads == {"class": 10, "kind": 2}


def test_missing_files_without_download(tmp_path: Path) -> None:
    with pytest.raises(CIFARUnavailableError) as err:
        CIFAR10DataModule(data_dir=str(tmp_path), download=False).prepare_data()
    message = str(err.value)
    assert "cifar-10-batches-py" in message and "data_batch_1" in message
    assert "data.download=false" in message and "cifar-10-python.tar.gz" in message


def test_offline_download_fails_with_advice(tmp_path: Path, monkeypatch) -> None:
    """No network: the torchvision download error is turned into advice (never downloads here)."""

    def offline(*args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(cifar_source, "_torchvision_download", offline)
    with pytest.raises(CIFARUnavailableError, match="offline") as err:
        CIFAR10DataModule(data_dir=str(tmp_path), download=True).prepare_data()
    assert "Network is unreachable" in str(err.value) and "data=cifar10_jpeg" in str(err.value)


def test_local_archive_is_extracted(tmp_path: Path, monkeypatch) -> None:
    """The official .tar.gz lying in data_dir is extracted without any download."""
    write_cifar10(tmp_path / "src", n_train=10, n_test=5)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with tarfile.open(data_dir / CIFAR10.archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / CIFAR10.folder, arcname=CIFAR10.folder)
    monkeypatch.setattr(cifar_source, "_torchvision_download", pytest.fail)
    dm = CIFAR10DataModule(data_dir=str(data_dir), train_val_test_split=[8, 2, 5])
    dm.prepare_data()
    dm.setup()
    assert len(dm.data_train) == 8 and dm.files_present()


def test_malformed_batch_is_reported(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n_train=10, n_test=5)
    path = tmp_path / CIFAR10.folder / "data_batch_2"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(CIFARUnavailableError, match="3072"):
        CIFAR10DataModule(data_dir=str(tmp_path)).load_split(train=True)
