"""Evaluating a training checkpoint reproduces the training run's test metrics."""

from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from src.eval import evaluate
from src.train import train


def test_train_then_eval(cfg_train: DictConfig, cfg_eval: DictConfig, tmp_path: Path) -> None:
    with open_dict(cfg_train):
        cfg_train.seed = 0
    HydraConfig().set_config(cfg_train)
    train_metrics, _ = train(cfg_train)
    ckpts = sorted((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    assert ckpts, "training wrote no checkpoint"

    with open_dict(cfg_eval):
        cfg_eval.ckpt_path = str(ckpts[-1])
        cfg_eval.paths.output_dir = str(tmp_path / "eval")
    HydraConfig().set_config(cfg_eval)
    test_metrics, _ = evaluate(cfg_eval)

    assert float(test_metrics["test/acc"]) > 0.5
    figures = tmp_path / "eval" / "figures"  # eval draws the same pictures as train's test
    assert {"test_confusion_matrix.png", "test_misclassified.png"} <= {
        p.name for p in figures.glob("*.png")
    }
    assert float(train_metrics["test/acc"]) == pytest.approx(
        float(test_metrics["test/acc"]), abs=1e-3
    )


def test_eval_requires_checkpoint(cfg_eval: DictConfig) -> None:
    with open_dict(cfg_eval):
        cfg_eval.ckpt_path = None
    HydraConfig().set_config(cfg_eval)
    with pytest.raises(ValueError, match="ckpt_path"):
        evaluate(cfg_eval)
