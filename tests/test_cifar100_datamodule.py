"""CIFAR-100 datamodule (fine, coarse and both label sets) on small official-format files."""

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import open_dict

from src.data.cifar100_datamodule import CIFAR100DataModule
from src.data.components.cifar_source import CIFARUnavailableError
from tests.conftest import compose_config
from tests.helpers.cifar_files import (
    CIFAR100_COARSE,
    CIFAR100_FINE,
    FINE_TO_COARSE,
    write_cifar10,
    write_cifar100,
)

SPLIT = [250, 50, 100]
EXPERIMENTS = [
    "cifar10_cnn_benchmark",
    "cifar10_convnext_benchmark",
    "cifar10_vit_benchmark",
    "cifar10_efficientnet_benchmark",
    "cifar100_cnn_benchmark",
    "cifar100_convnext_benchmark",
    "cifar100_cnn",
    "cifar100_coarse_cnn",
]


@pytest.fixture(scope="module")
def cifar100_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A data_dir with ``cifar-100-python`` (300 training and 100 test images)."""
    root = tmp_path_factory.mktemp("cifar100")
    return root, write_cifar100(root, n_train=300, n_test=100)


def make(root: Path, **kwargs) -> CIFAR100DataModule:
    dm = CIFAR100DataModule(data_dir=str(root), train_val_test_split=SPLIT, batch_size=16, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def test_fine_labels(cifar100_dir) -> None:
    root, written = cifar100_dir
    dm = make(root)
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (250, 50, 100)
    assert dm.heads == {"label": 100}
    assert dm.class_names == CIFAR100_FINE  # from the meta file
    assert torch.equal(dm.data_test.labels, torch.from_numpy(written["test_fine"]))
    assert torch.equal(dm.data_test.images, torch.from_numpy(written["test_images"]))
    labels = torch.cat([dm.data_train.labels, dm.data_val.labels])
    assert labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() < 100
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape == (16, 3, 32, 32) and y.shape == (16,)


def test_coarse_labels(cifar100_dir) -> None:
    root, written = cifar100_dir
    dm = make(root, label_mode="coarse")
    assert dm.heads == {"label": 20} and dm.num_classes == 20
    assert dm.class_names == CIFAR100_COARSE
    assert torch.equal(dm.data_test.labels, torch.from_numpy(written["test_coarse"]))
    assert dm.data_train.labels.max() < 20


def test_both_heads_are_consistent(cifar100_dir) -> None:
    """Multihead labels: every image's coarse label is its fine class's official superclass."""
    root, _ = cifar100_dir
    dm = make(root, label_mode="both")
    assert dm.heads == {"fine": 100, "coarse": 20}
    mapping = torch.tensor(FINE_TO_COARSE)
    for data in (dm.data_train, dm.data_val, dm.data_test):
        assert set(data.labels) == {"fine", "coarse"}
        assert torch.equal(mapping[data.labels["fine"]], data.labels["coarse"])
    found = dm.fine_to_coarse()
    seen = found >= 0
    assert torch.equal(found[seen], mapping[seen])
    assert dm.label_names["coarse"][int(mapping[CIFAR100_FINE.index("whale")])] == "aquatic_mammals"


def test_modes_share_the_same_split(cifar100_dir) -> None:
    """fine, coarse and both see the same images in every split (one seed, one split)."""
    root, _ = cifar100_dir
    fine, coarse, both = make(root), make(root, label_mode="coarse"), make(root, label_mode="both")
    assert torch.equal(fine.data_val.images, coarse.data_val.images)
    assert torch.equal(fine.data_val.labels, both.data_val.labels["fine"])
    assert torch.equal(coarse.data_val.labels, both.data_val.labels["coarse"])


def test_conflicting_fine_to_coarse_is_detected(tmp_path: Path) -> None:
    import pickle

    write_cifar100(tmp_path, n_train=20, n_test=5)
    path = tmp_path / "cifar-100-python" / "train"
    content = pickle.loads(path.read_bytes())
    content[b"fine_labels"][:2] = [3, 3]
    content[b"coarse_labels"][:2] = [0, 1]
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(ValueError, match="several coarse"):
        CIFAR100DataModule(data_dir=str(tmp_path)).fine_to_coarse()


def test_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(CIFARUnavailableError, match="cifar-100-python") as err:
        CIFAR100DataModule(data_dir=str(tmp_path), download=False).prepare_data()
    assert "cifar-100-python.tar.gz" in str(err.value)


def test_bad_label_mode() -> None:
    with pytest.raises(ValueError, match="fine.*coarse.*both"):
        CIFAR100DataModule(label_mode="superclass")


@pytest.mark.parametrize(
    ("config", "mode", "classes"), [("cifar100", "fine", 100), ("cifar100_coarse", "coarse", 20)]
)
def test_data_configs(cifar100_dir, config: str, mode: str, classes: int) -> None:
    root, _ = cifar100_dir
    cfg = compose_config("train.yaml", [f"data={config}", f"data.data_dir={root}"])
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, CIFAR100DataModule) and dm.hparams.label_mode == mode
    assert dm.num_classes == classes
    assert dm.transform.mean.flatten().tolist() == pytest.approx([0.5071, 0.4865, 0.4409])
    assert dm.transform.std.flatten().tolist() == pytest.approx([0.2673, 0.2564, 0.2762])
    assert dm.transform.crop_padding == 4 and dm.transform.hflip


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_configs(experiment: str) -> None:
    """Each benchmark experiment: fixed seed, tags, a one-cycle recipe, and a net whose class
    count matches the data's."""
    cfg = compose_config("train.yaml", [f"experiment={experiment}"])
    assert cfg.seed == 12345 and len(cfg.tags) >= 2
    assert cfg.trainer.max_epochs >= 15  # a full recipe, not the 5-epoch quick runs
    assert cfg.model.scheduler._target_.endswith("OneCycleLR")
    assert cfg.model.scheduler_interval == "step"
    assert cfg.model.criterion.label_smoothing == 0.1
    assert cfg.data.batch_size == 256
    dataset = "cifar100" if experiment.startswith("cifar100") else "cifar10"
    assert cfg.tags[0].startswith(dataset)
    expected = {"fine": 100, "coarse": 20, "class": 10}[cfg.data.label_mode]
    assert cfg.model.net.num_classes == expected


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_train_on_small_files(experiment: str, tmp_path: Path) -> None:
    """One optimizer step, one validation and one test batch of every experiment on fake files."""
    from hydra.core.hydra_config import HydraConfig

    from src.train import train

    write_cifar10(tmp_path, n_train=40, n_test=16)
    write_cifar100(tmp_path, n_train=40, n_test=16)
    cfg = compose_config(
        "train.yaml",
        [
            f"experiment={experiment}",
            f"data.data_dir={tmp_path}",
            "data.train_val_test_split=[32,8,16]",
            "data.batch_size=8",
            "+trainer.fast_dev_run=true",
            "trainer.accelerator=cpu",
            f"paths.output_dir={tmp_path}",
            f"paths.log_dir={tmp_path}",
            "extras.print_config=false",
            "~callbacks.rich_progress_bar",
        ],
    )
    with open_dict(cfg):
        cfg.logger = None
    HydraConfig().set_config(cfg)
    metrics, _ = train(cfg)
    assert {"train/loss", "test/acc"} <= set(metrics)
    assert torch.isfinite(metrics["train/loss"])
