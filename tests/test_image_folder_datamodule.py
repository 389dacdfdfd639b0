"""Image-folder datamodule: layout checks, decode-once cache, val folder, lazy pipeline, archives."""

import hashlib
import os
import resource
import tarfile
import time
from pathlib import Path

import hydra
import pytest
import torch
from torch.utils.data import Subset
from torchvision.io import decode_image, write_png

from src.data.components import image_folder
from src.data.components.image_folder import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageFolderError,
    ImageTooLargeError,
    check_image_pixels,
)
from src.data.image_folder_datamodule import ImageFolderDataModule
from tests.conftest import ROOT, compose_config
from tests.helpers.cifar_files import CIFAR10_CLASSES, write_image_folder
from tests.helpers.huge_png import write_huge_png

CLASSES = ("cat", "dog", "frog")


def make(root: Path, **kwargs) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(data_dir=str(root), batch_size=4, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


@pytest.fixture
def decode_calls(monkeypatch) -> list[str]:
    """Count image decodes (the expensive step the cache avoids)."""
    calls: list[str] = []
    original = image_folder.read_image

    def counting(path: str, *args, **kwargs) -> torch.Tensor:
        calls.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(image_folder, "read_image", counting)
    return calls


def test_reads_layout_and_splits(tmp_path: Path) -> None:
    write_image_folder(tmp_path, CLASSES, {"train": 10, "test": 4})
    dm = make(tmp_path, val_size=0.2)
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (24, 6, 12)
    assert dm.class_names == list(CLASSES) and dm.heads == {"label": 3}
    assert dm.input_shape == (3, 32, 32)
    assert dm.data_train.images.dtype == torch.uint8 and dm.data_test.labels.dtype == torch.int64
    assert torch.bincount(dm.data_test.labels).tolist() == [4, 4, 4]
    # PNG is lossless: every test image of "dog" (class 1) comes back exactly.
    dogs = {decode_image(str(p)).numpy().tobytes() for p in (tmp_path / "test" / "dog").iterdir()}
    loaded = {img.numpy().tobytes() for img in dm.data_test.images[dm.data_test.labels == 1]}
    assert loaded == dogs
    # Test images are in a seeded random order, not class by class (partial evaluations).
    labels = dm.data_test.labels
    assert not torch.equal(labels, labels.sort().values)


def test_decodes_once_then_uses_the_cache(
    tmp_path: Path, decode_calls: list[str], monkeypatch
) -> None:
    write_image_folder(tmp_path, CLASSES, {"train": 5, "test": 2})
    first = make(tmp_path)
    assert len(decode_calls) == 15 + 6  # every image once (prepare_data decodes, setup loads)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / ".decoded").glob("*.pt")) == [
        "test",
        "train",
    ]
    decode_calls.clear()
    loads, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or load(*a, **k))
    second = make(tmp_path)
    assert decode_calls == []
    assert len(loads) == 2  # setup loads train and test once; prepare_data only checks
    assert torch.equal(first.data_test.images, second.data_test.images)

    # Adding an image invalidates the cache of that split only.
    write_png(torch.zeros(3, 32, 32, dtype=torch.uint8), str(tmp_path / "test" / "cat" / "new.png"))
    third = make(tmp_path)
    assert len(decode_calls) == 7 and len(third.data_test) == 7
    assert len(list((tmp_path / ".decoded").glob("test-*.pt"))) == 1  # the stale one is gone


def test_edited_image_invalidates_the_cache(tmp_path: Path, decode_calls: list[str]) -> None:
    write_image_folder(tmp_path, CLASSES, {"train": 3, "test": 1})
    make(tmp_path)
    path = tmp_path / "train" / "cat" / "0000.png"
    write_png(torch.full((3, 32, 32), 7, dtype=torch.uint8), str(path))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    decode_calls.clear()
    dm = make(tmp_path, val_size=0)
    assert len(decode_calls) == 9
    assert (dm.data_train.images == 7).all(dim=(1, 2, 3)).any()


def test_without_cache_nothing_is_written(tmp_path: Path, decode_calls: list[str]) -> None:
    write_image_folder(tmp_path, CLASSES, {"train": 3, "test": 1})
    make(tmp_path, cache=False)
    assert len(decode_calls) == 12 and not (tmp_path / ".decoded").exists()


def test_val_folder_is_used(tmp_path: Path) -> None:
    write_image_folder(tmp_path, CLASSES, {"train": 4, "val": 2, "test": 1})
    dm = make(tmp_path, val_size=0.5)  # ignored: val/ exists
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (12, 6, 3)
    lazy = make(tmp_path, in_memory=False)
    assert (len(lazy.data_train), len(lazy.data_val), len(lazy.data_test)) == (12, 6, 3)


def test_lazy_pipeline_reads_files_per_sample(tmp_path: Path) -> None:
    write_image_folder(tmp_path, CLASSES, {"train": 5, "test": 2})
    dm = make(tmp_path, in_memory=False, val_size=3, augment={"crop_padding": 4, "hflip": True})
    assert isinstance(dm.data_train, Subset) and (len(dm.data_train), len(dm.data_val)) == (12, 3)
    assert not (tmp_path / ".decoded").exists()
    image, label = dm.data_test[0]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32) and label in (0, 1, 2)
    assert sorted(dm.data_test[i][1] for i in range(6)) == [0, 0, 1, 1, 2, 2]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64
    eager = make(tmp_path, val_size=3)
    assert dm.class_names == eager.class_names and dm.input_shape == eager.input_shape


def test_resizes_to_image_size(tmp_path: Path) -> None:
    write_image_folder(tmp_path, CLASSES, {"train": 2, "test": 1}, size=(40, 48))
    write_png(torch.zeros(3, 20, 20, dtype=torch.uint8), str(tmp_path / "train" / "dog" / "s.png"))
    with pytest.raises(ImageFolderError, match="data.image_size"):
        make(tmp_path, val_size=1)
    dm = make(tmp_path, image_size=[24, 16], val_size=1, cache=False)
    assert dm.input_shape == (3, 24, 16) and dm.data_train.images.shape[1:] == (3, 24, 16)


def test_grayscale(tmp_path: Path) -> None:
    write_image_folder(tmp_path, CLASSES, {"train": 2, "test": 1})
    dm = make(tmp_path, channels=1, val_size=1, normalize={"mean": [0.5], "std": [0.5]})
    assert dm.input_shape == (1, 32, 32)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "test does not exist"),
        ({"train/": None, "test/": None}, "has no class folders"),
        ({"train/cat/": None, "test/cat/": None}, "holds no images"),
        ({"train/cat/a.png": 1, "test/cat/a.png": 1, "test/owl/a.png": 1}, "training split lacks"),
    ],
)
def test_layout_errors(tmp_path: Path, layout: dict, message: str) -> None:
    (tmp_path / "train").mkdir()
    for name in layout:
        path = tmp_path / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(path))
    with pytest.raises(ImageFolderError, match=message):
        make(tmp_path, val_size=0)


def test_archive_is_extracted_once(tmp_path: Path, decode_calls: list[str]) -> None:
    write_image_folder(tmp_path / "src" / "pets", CLASSES, {"train": 3, "test": 1})
    archive = tmp_path / "pets.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "pets", arcname="pets")  # splits inside one top folder
    target = tmp_path / "data" / "pets"
    dm = make(target, archive=str(archive), val_size=1)
    assert (target / "train" / "cat").is_dir() and len(dm.data_test) == 3
    archive.unlink()  # a second run needs neither the archive nor decoding
    decode_calls.clear()
    assert len(make(target, archive=str(archive), val_size=1).data_train) == 8
    assert decode_calls == []


def test_huge_image_is_refused_before_decoding(tmp_path: Path) -> None:
    """A 200 KB PNG of 20000 x 20000 pixels (1.2 GB as RGB) fails from its header alone."""
    write_image_folder(tmp_path, CLASSES, {"train": 2, "test": 1})
    bomb = write_huge_png(tmp_path / "test" / "dog" / "bomb.png")
    assert bomb.stat().st_size < 1_000_000
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.monotonic()
    with pytest.raises(ImageTooLargeError) as err:
        make(tmp_path, val_size=1, cache=False)
    assert time.monotonic() - start < 5
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 200  # the decoded image alone would be 1144 MiB
    message = str(err.value)
    assert str(bomb) in message and "20000 x 20000" in message
    assert f"{DEFAULT_MAX_IMAGE_PIXELS:,}" in message and "data.max_image_pixels" in message


def test_image_pixel_limit_is_configurable(tmp_path: Path) -> None:
    write_image_folder(tmp_path, CLASSES, {"train": 2, "test": 1}, size=(16, 12))
    with pytest.raises(ImageTooLargeError, match=r"12 x 16 \(width x height\) = 192 pixels"):
        make(tmp_path, val_size=1, cache=False, max_image_pixels=191)
    assert make(tmp_path, val_size=1, cache=False, max_image_pixels=192).input_shape == (3, 16, 12)
    bomb = write_huge_png(tmp_path / "bomb.png")
    assert check_image_pixels(bomb, 400_000_000) == (20_000, 20_000)  # header only
    with pytest.raises(ValueError, match="data.max_image_pixels must be a positive"):
        ImageFolderDataModule(data_dir=str(tmp_path), max_image_pixels=0)
    cfg = compose_config("train.yaml", ["data=image_folder", f"data.data_dir={tmp_path}"])
    assert cfg.data.max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS and cfg.data.archive_sha256 is None


@pytest.mark.parametrize("in_memory", [True, False])
def test_one_class_is_an_early_error(tmp_path: Path, in_memory: bool) -> None:
    write_image_folder(tmp_path, ("cat",), {"train": 3, "test": 1})
    with pytest.raises(ImageFolderError, match="needs at least two classes") as err:
        make(tmp_path, val_size=1, cache=False, in_memory=in_memory)
    assert f"{tmp_path / 'train'} has one class folder (['cat'])" in str(err.value)


@pytest.mark.parametrize("problem", ["not an image", "truncated"])
def test_unreadable_image_is_named(tmp_path: Path, problem: str) -> None:
    write_image_folder(tmp_path, CLASSES, {"train": 2, "test": 1})
    bad = tmp_path / "train" / "cat" / "0001.png"
    content = bad.read_bytes()
    bad.write_bytes(b"not a png at all" if problem == "not an image" else content[:60])
    with pytest.raises(ImageFolderError, match=r"Cannot (read|decode) image") as err:
        make(tmp_path, val_size=1, cache=False)
    assert str(bad) in str(err.value)


def test_archive_digest_is_checked_before_extraction(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "src", CLASSES, {"train": 2, "test": 1})
    archive = tmp_path / "pets.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src", arcname=".")
    right = hashlib.sha256(archive.read_bytes()).hexdigest()
    target = tmp_path / "data"
    with pytest.raises(ImageFolderError) as err:
        make(target, archive=str(archive), archive_sha256="0" * 64, val_size=1)
    message = str(err.value)
    assert str(archive) in message and right in message and "data.archive_sha256" in message
    assert not (target / "train").exists()  # nothing extracted
    dm = make(target, archive=str(archive), archive_sha256=right.upper(), val_size=1)
    assert len(dm.data_test) == 3


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(ImageFolderError, match="does not exist"):
        make(tmp_path / "x", archive=str(tmp_path / "none.tgz"))


def test_cifar10_jpeg_config(tmp_path: Path) -> None:
    """configs/data/cifar10_jpeg.yaml: the cifar10 pipeline over an image folder."""
    cfg = compose_config(
        "train.yaml", ["data=cifar10_jpeg", f"data.data_dir={tmp_path}", "data.archive=x.tgz"]
    )
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, ImageFolderDataModule)
    assert dm.hparams.image_size == 32 and dm.hparams.val_size == 5000
    assert dm.hparams.archive == "x.tgz"
    assert dm.describe().normalize == {  # data=cifar10's, so both train alike
        "mean": [0.4914, 0.4822, 0.4465],
        "std": [0.2470, 0.2435, 0.2616],
    }
    assert dm.transform.crop_padding == 4 and dm.transform.hflip


def shared_archive() -> Path | None:
    """The JPEG CIFAR-10 copy of this workplace, if there is one (never part of the project)."""
    for shared in (ROOT.parent / "shared", ROOT / "shared", ROOT.parents[1] / "shared"):
        if (shared / "data" / "cifar10-jpeg.tgz").is_file():
            return shared / "data" / "cifar10-jpeg.tgz"
    return None


@pytest.mark.slow
@pytest.mark.skipif(shared_archive() is None, reason="no ../shared/data/cifar10-jpeg.tgz here")
def test_real_cifar10_jpeg() -> None:
    """The real JPEG copy: official sizes, classes and channel means (decoded once, then cached
    under data/cifar10-jpeg like the config's default)."""
    dm = ImageFolderDataModule(
        data_dir=str(ROOT / "data" / "cifar10-jpeg"),
        archive=str(shared_archive()),
        image_size=32,
        val_size=5000,
    )
    dm.prepare_data()
    dm.setup()
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (45_000, 5_000, 10_000)
    assert dm.class_names == CIFAR10_CLASSES
    assert torch.bincount(dm.data_test.labels).tolist() == [1000] * 10
    mean = dm.data_train.images[:10_000].float().div(255).mean(dim=(0, 2, 3))
    assert mean.tolist() == pytest.approx([0.4914, 0.4822, 0.4465], abs=0.01)


def test_normalization_is_computed_from_the_training_split(tmp_path: Path) -> None:
    """Without data.normalize the mean and std come from the training images (both pipelines),
    and the description (read by checkpoints) carries them."""
    write_image_folder(tmp_path, CLASSES, {"train": 6, "test": 2})
    dm = make(tmp_path, val_size=3)
    pixels = dm.load_split(train=True)[0].double().div(255)
    expected_mean = pixels.mean(dim=(0, 2, 3)).tolist()
    expected_std = pixels.std(dim=(0, 2, 3), correction=0).tolist()
    described = dm.describe().normalize
    assert described["mean"] == pytest.approx(expected_mean, abs=1e-4)
    assert described["std"] == pytest.approx(expected_std, abs=1e-4)
    x, _ = next(iter(dm.test_dataloader()))  # hand-iterated batches use the computed values
    expected = (dm.data_test.images[:4].float() / 255 - dm.transform.mean) / dm.transform.std
    assert torch.allclose(x, expected)
    lazy = make(tmp_path, val_size=3, in_memory=False)  # all 18 training images fit the sample
    assert lazy.describe().normalize["mean"] == pytest.approx(expected_mean, abs=1e-4)
    given = make(tmp_path, val_size=3, normalize={"mean": [0.5] * 3, "std": [0.25] * 3})
    assert given.describe().normalize == {"mean": [0.5] * 3, "std": [0.25] * 3}
