"""Shared fixtures: composed train/eval configs pointed at a temporary output folder."""

from pathlib import Path

import pytest
import rootutils
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = rootutils.setup_root(__file__, indicator=".project-root", pythonpath=True)
CONFIGS = str(ROOT / "configs")

# Small real-MNIST splits keep the suite fast; the test split is still the official test set.
TINY_SPLIT = "data.train_val_test_split=[2000,500,1000]"


def compose_config(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose a config with the hydra node set, the way ``@hydra.main`` would."""
    from src.utils.run_dir import register_run_suffix_resolver  # entry points register it too

    register_run_suffix_resolver()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=config_name, return_hydra_config=True, overrides=overrides or [])


def _tune_for_tests(cfg: DictConfig, tmp_path: Path, figures: bool = False) -> None:
    """Small, quiet, CPU-only runs writing into ``tmp_path``; the test-figure callback (about
    a second of drawing per run) only where a test asks for it."""
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
        cfg.trainer.max_epochs = 1
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.devices = 1
        cfg.trainer.enable_progress_bar = False
        if cfg.get("callbacks"):
            cfg.callbacks.pop("rich_progress_bar", None)
            if not figures:
                cfg.callbacks.pop("test_figures", None)
        cfg.data.num_workers = 0
        cfg.data.pin_memory = False
        cfg.extras.print_config = False
        cfg.extras.enforce_tags = False
        cfg.logger = None


@pytest.fixture
def cfg_train(tmp_path: Path) -> DictConfig:
    """A train config on a small MNIST split, writing into ``tmp_path``."""
    cfg = compose_config("train.yaml", [TINY_SPLIT])
    _tune_for_tests(cfg, tmp_path)
    yield cfg
    GlobalHydra.instance().clear()


@pytest.fixture
def cfg_eval(tmp_path: Path) -> DictConfig:
    """An eval config (``ckpt_path`` still to be set) writing into ``tmp_path``."""
    cfg = compose_config("eval.yaml", ["ckpt_path=.", TINY_SPLIT])
    _tune_for_tests(cfg, tmp_path, figures=True)
    yield cfg
    GlobalHydra.instance().clear()


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    """Tests are small; two threads match the CI machine and avoid oversubscription."""
    torch.set_num_threads(2)


# ---------------------------------------------- tiny trained checkpoints (predict, export)
SMALL_SPLIT = "data.train_val_test_split=[500,100,200]"
MULTIHEAD = {"digit": 10, "thickness": 5, "smoothness": 3}


def train_tiny(
    out_dir: Path, *overrides: str, logger: str | None = None, figures: bool = False
) -> Path:
    """Train a few batches with ``overrides`` into ``out_dir``; return its ``last.ckpt``."""
    from src.train import train  # here, so collecting tests does not import the training stack

    cfg = compose_config("train.yaml", [SMALL_SPLIT, *overrides])
    _tune_for_tests(cfg, out_dir, figures=figures)
    with open_dict(cfg):
        cfg.trainer.limit_train_batches = 3
        cfg.trainer.limit_val_batches = 1
        cfg.trainer.limit_test_batches = 2
        if logger:
            cfg.logger = compose_config("train.yaml", [f"logger={logger}"]).logger
            cfg.logger[logger].save_dir = str(out_dir / logger)
    HydraConfig().set_config(cfg)
    train(cfg)
    return out_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def single_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``last.ckpt`` of the default SimpleDenseNet on MNIST."""
    return train_tiny(tmp_path_factory.mktemp("single"))


@pytest.fixture(scope="session")
def multi_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``last.ckpt`` of the multihead CNN (digit, thickness, smoothness)."""
    return train_tiny(tmp_path_factory.mktemp("multi"), "experiment=mnist_multihead_cnn")
