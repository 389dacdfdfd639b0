"""Every experiment config trains with fast_dev_run: MNIST ones on real data, CIFAR ones on
tiny files in the official on-disk format (nothing is downloaded)."""

from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from src.train import train
from src.utils.experiment_names import canonical_experiments
from tests.conftest import ROOT, compose_config
from tests.helpers.cifar_files import write_cifar10, write_cifar100
from tests.helpers.weight_files import write_timm_weights

# Old names are aliases, composed and compared in test_experiment_names.py.
EXPERIMENTS = canonical_experiments()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run(experiment: str, tmp_path: Path) -> None:
    overrides = [
        f"experiment={experiment}",
        "+trainer.fast_dev_run=true",
        "trainer.accelerator=cpu",
    ]
    cfg = compose_config("train.yaml", overrides)
    if "cifar" in cfg.data._target_:
        write_cifar10(tmp_path, n_train=40, n_test=16)
        write_cifar100(tmp_path, n_train=40, n_test=16)
        overrides += [
            f"data.data_dir={tmp_path}",
            "data.train_val_test_split=[32,8,16]",
            "data.batch_size=8",
        ]
    else:
        overrides += [f"data.data_dir={ROOT / 'data'}", "data.train_val_test_split=[512,128,256]"]
    if cfg.model.net.get("pretrained"):  # no internet: a local file stands in for the download
        weights = tmp_path / "weights.pt"
        write_timm_weights(weights, cfg.model.net.model_name)
        overrides += ["model.net.pretrained=false", f"model.net.checkpoint_path={weights}"]
    cfg = compose_config("train.yaml", overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
        cfg.extras.print_config = False
        cfg.extras.enforce_tags = False
        cfg.logger = None
        cfg.trainer.devices = 1
        cfg.trainer.pop("strategy", None)
        cfg.model.compile = False  # compilation is tested once in test_architectures
        cfg.trainer.precision = 32  # bf16 is emulated (slow) on CPUs without native support
    HydraConfig().set_config(cfg)
    metrics, _ = train(cfg)
    assert any(k.startswith("test/") for k in metrics), metrics
