"""Every config group composes, and the main configs instantiate."""

from pathlib import Path

import hydra
import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.utils import instantiate_model
from tests.conftest import CONFIGS, compose_config

ORIGINAL_GROUPS = {
    "callbacks": {
        "default",
        "early_stopping",
        "model_checkpoint",
        "model_summary",
        "rich_progress_bar",
        "none",
    },
    "data": {"mnist"},
    "debug": {"default", "fdr", "limit", "overfit", "profiler"},
    "experiment": {"example"},
    "logger": {"csv", "tensorboard", "mlflow", "wandb", "comet", "neptune", "aim", "many_loggers"},
    "model": {"mnist"},
    "trainer": {"default", "cpu", "gpu", "mps", "ddp", "ddp_sim"},
    "paths": {"default"},
    "extras": {"default"},
    "hydra": {"default"},
}


def options(group: str) -> list[str]:
    """Names of the configs in one group folder."""
    return sorted(p.stem for p in Path(CONFIGS, group).glob("*.yaml"))


def test_original_groups_present() -> None:
    for group, names in ORIGINAL_GROUPS.items():
        assert names <= set(options(group)), f"configs/{group} lacks {names - set(options(group))}"
    assert Path(CONFIGS, "local").is_dir()


def test_train_config(cfg_train: DictConfig) -> None:
    assert cfg_train and cfg_train.data and cfg_train.model and cfg_train.trainer
    HydraConfig().set_config(cfg_train)
    hydra.utils.instantiate(cfg_train.data)
    instantiate_model(cfg_train.model)
    hydra.utils.instantiate(cfg_train.trainer)


def test_eval_config(cfg_eval: DictConfig) -> None:
    assert cfg_eval and cfg_eval.data and cfg_eval.model and cfg_eval.trainer
    HydraConfig().set_config(cfg_eval)
    hydra.utils.instantiate(cfg_eval.data)
    instantiate_model(cfg_eval.model)
    hydra.utils.instantiate(cfg_eval.trainer)


@pytest.mark.parametrize("group", ["callbacks", "debug", "logger", "trainer", "hydra/launcher"])
def test_group_options_compose(group: str) -> None:
    """Each option of these groups composes on top of train.yaml."""
    if not Path(CONFIGS, group).is_dir():
        pytest.skip(f"configs/{group} does not exist")
    for name in options(group):
        cfg = compose_config("train.yaml", [f"{group}={name}"])
        assert cfg.trainer is not None


def test_default_accelerator_is_automatic(cfg_train: DictConfig) -> None:
    cfg = compose_config("train.yaml")
    assert cfg.trainer.accelerator == "auto"  # Lightning picks CUDA, then MPS, then CPU


def test_unknown_config_name_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="model=no_such_model|no_such_model"):
        compose_config("train.yaml", ["model=no_such_model"])


@pytest.mark.parametrize(
    ("choice", "target", "interval"),
    [
        ("plateau", "torch.optim.lr_scheduler.ReduceLROnPlateau", "epoch"),
        ("onecycle", "torch.optim.lr_scheduler.OneCycleLR", "step"),
        ("none", None, None),
    ],
)
def test_scheduler_is_a_swappable_group(choice: str, target: str | None, interval: str) -> None:
    """`model/scheduler=<name>` replaces the whole schedule (no keys of the default left over)."""
    cfg = compose_config("train.yaml", ["model=mnist_cnn_421k", f"model/scheduler={choice}"])
    scheduler = cfg.model.scheduler
    if target is None:
        assert scheduler is None
        return
    assert scheduler._target_ == target
    assert cfg.model.scheduler_interval == interval
    if choice == "onecycle":
        assert "patience" not in scheduler  # nothing merged in from the plateau default
        assert scheduler.max_lr == cfg.model.optimizer.lr


def test_experiment_selects_its_scheduler() -> None:
    """Experiments pick a schedule with `override /model/scheduler`; the CLI can still swap it."""
    cfg = compose_config("train.yaml", ["experiment=mnist_cnn"])
    assert cfg.model.scheduler._target_.endswith("OneCycleLR")
    cfg = compose_config("train.yaml", ["experiment=mnist_cnn", "model/scheduler=plateau"])
    assert cfg.model.scheduler._target_.endswith("ReduceLROnPlateau")
