"""Experiment names follow ``<data>_<network>[_<variant>]``; old names compose the same config."""

import re

import pytest
from omegaconf import OmegaConf

from src.utils.experiment_names import canonical_experiments, experiment_aliases
from tests.conftest import compose_config

DATA = ("mnist", "cifar10", "cifar100", "cifar100_coarse")
NETWORKS = ("sdn", "cnn", "convnext", "efficientnet", "vit", "resnet18", "multihead_cnn")
PATTERN = re.compile(rf"^({'|'.join(DATA)})_({'|'.join(NETWORKS)})(_[a-z0-9]+)?$")

# Every old name and the config it now stands for; removing one would break existing commands.
OLD_NAMES = {
    "example": "mnist_sdn",
    "cnn_mnist": "mnist_cnn",
    "convnext_mnist": "mnist_convnext",
    "efficientnet_mnist": "mnist_efficientnet",
    "vit_mnist": "mnist_vit",
    "vit_mnist_995": "mnist_vit_995",
    "mnist_speedrun": "mnist_cnn_speedrun",
    "multihead_cnn_mnist": "mnist_multihead_cnn",
    "multihead_mnist": "mnist_multihead_cnn",
    "cifar10_benchmark_cnn": "cifar10_cnn_benchmark",
    "cifar10_benchmark_convnext": "cifar10_convnext_benchmark",
    "cifar10_benchmark_efficientnet": "cifar10_efficientnet_benchmark",
    "cifar10_benchmark_vit": "cifar10_vit_benchmark",
    "cifar10_speedrun": "cifar10_cnn_speedrun",
    "finetune_cifar10": "cifar10_resnet18_finetune",
    "multihead_cnn_cifar10": "cifar10_multihead_cnn",
    "cifar100_benchmark_cnn": "cifar100_cnn_benchmark",
    "cifar100_benchmark_convnext": "cifar100_convnext_benchmark",
    "multihead_cifar100": "cifar100_multihead_cnn",
}


@pytest.mark.parametrize("name", canonical_experiments())
def test_name_follows_the_pattern(name: str) -> None:
    assert PATTERN.match(name), (
        f"configs/experiment/{name}.yaml: name it <data>_<network>[_<variant>] with data in "
        f"{DATA} and network in {NETWORKS}"
    )


def test_every_old_name_is_an_alias_of_its_new_name() -> None:
    assert experiment_aliases() == OLD_NAMES
    assert set(OLD_NAMES.values()) <= set(canonical_experiments())  # no alias of an alias


def _without_runtime(cfg) -> dict:
    """The composed config, unresolved, less the fields that repeat the command line."""
    out = OmegaConf.to_container(cfg, resolve=False)
    out["hydra"]["runtime"]["choices"].pop("experiment")
    out["hydra"]["overrides"].pop("task")
    out["hydra"]["job"].pop("override_dirname")
    return out


@pytest.mark.parametrize(("old", "new"), sorted(OLD_NAMES.items()))
def test_alias_composes_the_same_config(old: str, new: str) -> None:
    aliased = compose_config("train.yaml", [f"experiment={old}"])
    direct = compose_config("train.yaml", [f"experiment={new}"])
    assert aliased.hydra.runtime.choices.experiment == old
    assert _without_runtime(aliased) == _without_runtime(direct)
    assert aliased.tags == direct.tags and aliased.model == direct.model
