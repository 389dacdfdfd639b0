"""The builder fills a network's unset shape arguments from the data, and nothing else."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from src.models.build import fit_model_config, instantiate_model
from tests.conftest import _tune_for_tests, compose_config

MNIST_LIKE = SimpleNamespace(input_shape=(1, 28, 28), heads={"label": 10})
MULTIHEAD = SimpleNamespace(input_shape=(3, 32, 32), heads={"digit": 10, "kind": 2})


def net_cfg(**net):
    return OmegaConf.create({"_target_": "x", "net": {"_target_": "y", **net}})


def test_unset_shape_arguments_come_from_the_data() -> None:
    cfg = net_cfg(in_channels=None, image_size=None, num_classes=None, heads_config=None)
    fitted = fit_model_config(cfg, MNIST_LIKE)
    assert fitted.net.in_channels == 1 and fitted.net.image_size == 28
    assert fitted.net.num_classes == 10 and fitted.net.heads_config is None
    assert cfg.net.in_channels is None  # the input config is left as it was


def test_values_the_user_set_stay() -> None:
    fitted = fit_model_config(net_cfg(in_channels=3, num_classes=None), MNIST_LIKE)
    assert fitted.net.in_channels == 3 and fitted.net.num_classes == 10
    assert "image_size" not in fitted.net  # keys a network does not take are not added


def test_several_heads_fill_heads_config_not_num_classes() -> None:
    fitted = fit_model_config(net_cfg(num_classes=None, heads_config=None), MULTIHEAD)
    assert fitted.net.num_classes is None and dict(fitted.net.heads_config) == MULTIHEAD.heads


def test_dense_net_sizes_and_unknown_image_size() -> None:
    fitted = fit_model_config(net_cfg(input_size=None, output_size=None), MNIST_LIKE)
    assert fitted.net.input_size == 784 and fitted.net.output_size == 10
    folder = SimpleNamespace(input_shape=(3, 0, 0), heads={"label": 4})  # size read later
    fitted = fit_model_config(net_cfg(in_channels=None, image_size=None), folder)
    assert fitted.net.in_channels == 3 and fitted.net.image_size is None


@pytest.mark.parametrize("config", ["timm", "torchvision"])
def test_library_config_builds_for_mnist_without_shape_keys(config: str) -> None:
    cfg = compose_config("train.yaml", [f"model={config}"])
    model = instantiate_model(fit_model_config(cfg.model, MNIST_LIKE))
    assert model.heads == {"label": 10}
    assert model.model_config["net"]["in_channels"] == 1  # the fitted config is what is saved


def test_timm_resnet18_trains_on_mnist_from_the_command_line_keys(tmp_path: Path) -> None:
    """``model=timm model.net.model_name=resnet18`` with no shape keys: fit, test, checkpoint."""
    from src.train import train

    cfg = compose_config(
        "train.yaml",
        ["model=timm", "model.net.model_name=resnet18", "data.train_val_test_split=[16,8,8]"],
    )
    _tune_for_tests(cfg, tmp_path)
    with open_dict(cfg):
        cfg.data.batch_size = 8
        cfg.trainer.limit_train_batches = 2
    HydraConfig().set_config(cfg)
    metrics, objects = train(cfg)
    assert "test/acc" in metrics
    assert objects["model"].net.in_channels == 1 and objects["model"].heads == {"label": 10}
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
