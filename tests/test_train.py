"""Training end to end on small real-MNIST splits: the original template's suite and more."""

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from src.train import train
from tests.conftest import TINY_SPLIT, compose_config


def run(cfg: DictConfig, **overrides) -> dict:
    """Apply dotted overrides to ``cfg`` and train; return the metric dict as floats."""
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    HydraConfig().set_config(cfg)
    metrics, _ = train(cfg)
    return {k: float(v) for k, v in metrics.items()}


def test_fast_dev_run(cfg_train: DictConfig) -> None:
    metrics = run(cfg_train, **{"trainer.fast_dev_run": True})
    assert {"train/loss", "val/acc", "test/acc"} <= set(metrics)


def test_learns_real_mnist(cfg_train: DictConfig) -> None:
    """One epoch on 2,000 real images: far above chance on the official test images."""
    metrics = run(cfg_train, seed=0)
    assert metrics["test/acc"] > 0.7, metrics
    assert metrics["val/acc_best"] == pytest.approx(metrics["val/acc"])


def test_seed_zero_is_applied(cfg_train: DictConfig, tmp_path: Path) -> None:
    """seed=0 seeds the run (the original skipped falsy seeds): two runs give identical metrics."""
    first = run(cfg_train.copy(), seed=0, **{"trainer.deterministic": True})
    second = run(cfg_train.copy(), seed=0, **{"trainer.deterministic": True})
    assert first["test/acc"] == second["test/acc"]
    assert first["train/loss"] == second["train/loss"]


def test_epoch_with_two_validation_passes(cfg_train: DictConfig) -> None:
    with open_dict(cfg_train):
        cfg_train.trainer.val_check_interval = 0.5
    metrics = run(cfg_train)
    assert "val/acc" in metrics


def test_resume_continues(cfg_train: DictConfig, tmp_path: Path) -> None:
    """Resuming from last.ckpt goes on from epoch 1 with the optimizer state and best metric."""
    run(cfg_train, seed=1)
    ckpt_dir = tmp_path / "checkpoints"
    assert {"epoch_000.ckpt", "last.ckpt"} <= {p.name for p in ckpt_dir.iterdir()}
    first = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert first["epoch"] == 0

    metrics = run(cfg_train, ckpt_path=str(ckpt_dir / "last.ckpt"), **{"trainer.max_epochs": 2})
    second = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert second["epoch"] == 1
    assert second["global_step"] == 2 * first["global_step"]
    assert (ckpt_dir / "epoch_001.ckpt").exists() or metrics["val/acc_best"] > 0
    # The best-accuracy tracker was restored, not restarted.
    best_before = first["state_dict"]["val_acc_best.max_value"]
    assert second["state_dict"]["val_acc_best.max_value"] >= best_before


def test_checkpoint_loads_with_weights_only(cfg_train: DictConfig, tmp_path: Path) -> None:
    run(cfg_train, **{"trainer.max_epochs": 1, "trainer.limit_train_batches": 2})
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert "state_dict" in ckpt and "hyper_parameters" in ckpt
    assert ckpt["datamodule_hyper_parameters"]["train_val_test_split"] == [2000, 500, 1000]


@pytest.mark.parametrize(
    "criterion",
    [
        {"_target_": "torch.nn.NLLLoss"},
        {"_target_": "torch.nn.MSELoss"},
        {"_target_": "torch.nn.BCEWithLogitsLoss"},
        {"_target_": "torch.nn.CrossEntropyLoss", "label_smoothing": 0.1},
        {"_target_": "torch.nn.CrossEntropyLoss", "weight": [1.0] * 9 + [2.0]},
    ],
    ids=["nll", "mse", "bce_logits", "label_smoothing", "class_weights"],
)
def test_configurable_losses_train(cfg_train: DictConfig, criterion: dict) -> None:
    with open_dict(cfg_train):
        cfg_train.model.criterion = criterion
        cfg_train.trainer.limit_train_batches = 8
    metrics = run(cfg_train, seed=0)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert metrics["test/acc"] > 0.3  # 8 batches are enough to beat chance with any of them


def test_old_config_without_criterion(cfg_train: DictConfig) -> None:
    with open_dict(cfg_train):
        del cfg_train.model.criterion
    metrics = run(cfg_train, **{"trainer.fast_dev_run": True})
    assert "test/acc" in metrics


def _direct_metrics(model, datamodule, loader) -> tuple[float, float]:
    """Accuracy and per-image mean loss of ``model`` over ``loader``, computed by hand."""
    model.eval()
    correct, loss_sum, seen = 0, 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            logits = model(datamodule.transform(x))
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y)) * len(y)
            seen += len(y)
    return correct / seen, loss_sum / seen


def test_epoch_metrics_equal_a_direct_computation(tmp_path: Path) -> None:
    """Logged accuracy and loss cover the whole split and nothing else: metrics accumulate by
    ``update``, are logged once per epoch and reset, so the sanity check's batches do not leak
    into the first validation and testing twice gives the same values."""
    # 500 val / 1000 test images in batches of 96: the short last batch tests the weighting
    cfg = compose_config("train.yaml", [TINY_SPLIT, "model=mnist_cnn", "data.batch_size=96"])
    torch.manual_seed(0)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    trainer = L.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=3,
        num_sanity_val_steps=2,
    )
    trainer.fit(model, datamodule=datamodule)
    val_acc, val_loss = _direct_metrics(model, datamodule, datamodule.val_dataloader())
    assert float(trainer.callback_metrics["val/acc"]) == pytest.approx(val_acc, abs=1e-6)
    assert float(trainer.callback_metrics["val/loss"]) == pytest.approx(val_loss, rel=1e-4)

    first = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    second = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    test_acc, test_loss = _direct_metrics(model, datamodule, datamodule.test_dataloader())
    for logged in (first, second):
        assert logged["test/acc"] == pytest.approx(test_acc, abs=1e-6)
        assert logged["test/loss"] == pytest.approx(test_loss, rel=1e-4)
