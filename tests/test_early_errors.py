"""Bad input fails early with a message naming the bad value and what would be valid.

One test (or a few) per case of issue 7, item 5; each asserts on the message text.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from src.models.components.losses import ClassificationLoss, UnsupportedLossError
from src.train import train
from src.utils import instantiate_model
from src.utils.checks import check_model_matches_data
from tests.conftest import ROOT, TINY_SPLIT, _tune_for_tests, compose_config


def make_cfg(tmp_path: Path, *overrides: str) -> DictConfig:
    """A tuned train config (tiny MNIST split, output in ``tmp_path``) with ``overrides``."""
    cfg = compose_config("train.yaml", [TINY_SPLIT, *overrides])
    _tune_for_tests(cfg, tmp_path)
    HydraConfig().set_config(cfg)
    return cfg


# Errors raised while Hydra builds an object reach the user wrapped, with the message kept.
BuildError = (ValueError, InstantiationException)
MULTIHEAD = ("data=multihead_mnist", "model=mnist_multihead_cnn_422k")


# ------------------------------------------------ 1. unknown config group option
@pytest.mark.parametrize(
    ("override", "group", "listed"),
    [
        ("model=nope", "model", "mnist_cnn_421k"),
        ("data=nope", "data", "cifar10"),
        ("experiment=nope", "experiment", "cnn_mnist"),
        ("hparams_search=nope", "hparams_search", "mnist_optuna"),
    ],
)
def test_unknown_group_option_names_it_and_lists_options(
    override: str, group: str, listed: str
) -> None:
    with pytest.raises(MissingConfigException) as err:
        compose_config("train.yaml", [override])
    message = str(err.value)
    assert f"Could not find '{group}/nope'" in message
    assert f"Available options in '{group}'" in message and listed in message


def test_unknown_model_on_the_command_line(tmp_path: Path) -> None:
    """The real entry point stops before anything is built, listing the valid names."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), "model=nope", f"paths.log_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "Could not find 'model/nope'" in result.stderr
    assert "Available options in 'model'" in result.stderr and "mnist_cnn_421k" in result.stderr
    assert "Instantiating" not in result.stdout + result.stderr


# -------------------------------------------- 2. head names that the net lacks
@pytest.mark.parametrize(
    ("override", "what"),
    [
        ("+model.loss_weights.colour=2.0", "loss_weights"),
        ("+model.criteria.colour._target_=torch.nn.CrossEntropyLoss", "criteria"),
        ("+model.primary_head=colour", "primary_head"),
    ],
)
def test_unknown_head_name_in_model_config(tmp_path: Path, override: str, what: str) -> None:
    cfg = make_cfg(tmp_path, *MULTIHEAD, override)
    with pytest.raises(BuildError, match=f"model.{what} names unknown head") as err:
        train(cfg)
    assert "['colour']" in str(err.value)
    assert "['digit', 'thickness', 'smoothness']" in str(err.value)
    assert not (tmp_path / "checkpoints").exists()


# ------------------------------------------- 3. model that does not fit the data
def test_rgb_model_on_mnist_fails_before_training(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "model=cifar10_cnn_3.3m")
    with pytest.raises(ValueError, match="Model and data do not match") as err:
        train(cfg)
    message = str(err.value)
    assert "(1, 28, 28)" in message and "3 channels" in message
    assert "MNISTDataModule" in message and "mnist_cnn_421k" in message  # a config that fits
    assert not (tmp_path / "checkpoints").exists()


def test_ten_class_model_on_cifar100(tmp_path: Path) -> None:
    """Caught from class attributes: no CIFAR-100 file is needed (``tmp_path`` is empty)."""
    cfg = make_cfg(tmp_path, "data=cifar100", "model=cifar10_cnn_3.3m", f"data.data_dir={tmp_path}")
    with pytest.raises(ValueError, match="predicts 10 classes but the data has 100") as err:
        train(cfg)
    assert "cifar100_cnn_64k" in str(err.value)
    assert "cifar100_coarse" not in str(err.value)  # 20 classes would not fit either


def test_single_head_model_on_multihead_data(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "data=multihead_mnist")
    with pytest.raises(ValueError, match=r"heads \['label'\] are not the data's heads") as err:
        check_model_matches_data(instantiate_model(cfg.model), instantiate(cfg.data))
    assert "mnist_multihead_cnn_422k" in str(err.value)


def test_dense_net_on_cifar_images(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "data=cifar10", f"data.data_dir={tmp_path}")
    with pytest.raises(ValueError, match=r"fails on a batch of the data's images \(3, 32, 32\)"):
        train(cfg)


def test_matching_pairs_pass(tmp_path: Path) -> None:
    """The check accepts the shipped pairings (and leaves the module in training mode)."""
    for overrides in [(), MULTIHEAD, ("data=cifar100", "model=cifar100_cnn_64k")]:
        cfg = make_cfg(tmp_path, *overrides)
        model, datamodule = instantiate_model(cfg.model), instantiate(cfg.data)
        check_model_matches_data(model, datamodule)
        assert model.training


def test_class_weight_of_wrong_length(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "+model.criterion.weight=[1.0,2.0,1.0]")
    with pytest.raises(ValueError, match="loss of head 'label'") as err:
        train(cfg)
    assert "10 classes" in str(err.value) and "one value per class" in str(err.value)


# ------------------------------------------------ 4. losses with other targets
class PairLoss(nn.Module):
    """A custom loss that wants two embeddings, like a contrastive loss."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Squared distance between two embedding batches of the same shape."""
        return ((a - b) ** 2).sum(-1).mean()


@pytest.mark.parametrize(
    "target",
    [
        "torch.nn.CosineEmbeddingLoss",
        "torch.nn.TripletMarginLoss",
        "torch.nn.CTCLoss",
        "torch.nn.MultiLabelMarginLoss",
        "tests.test_early_errors.PairLoss",
    ],
)
def test_loss_with_other_targets_is_rejected_from_config(tmp_path: Path, target: str) -> None:
    cfg = make_cfg(tmp_path, f"model.criterion._target_={target}")
    with pytest.raises(BuildError, match="UnsupportedLossError") as err:
        train(cfg)
    message = str(err.value)
    assert target.rsplit(".", 1)[-1] in message
    assert "Supported loss forms" in message and "CrossEntropyLoss" in message
    assert not (tmp_path / "checkpoints").exists()


def test_loss_without_reduction_is_rejected() -> None:
    with pytest.raises(UnsupportedLossError, match="reduction='mean'"):
        ClassificationLoss(nn.CrossEntropyLoss(reduction="none"))


def test_dry_run_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ClassificationLoss(nn.MSELoss())
    assert torch.equal(torch.rand(3), expected)


def test_supported_losses_from_config_still_build(tmp_path: Path) -> None:
    for target in ["torch.nn.NLLLoss", "torch.nn.BCEWithLogitsLoss", "torch.nn.MultiMarginLoss"]:
        cfg = make_cfg(tmp_path, f"model.criterion._target_={target}")
        model = instantiate_model(cfg.model)
        assert type(model.criteria["label"].criterion).__name__ == target.rsplit(".", 1)[-1]
