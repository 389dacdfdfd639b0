"""Loggers write real files that can be read back, with no network."""

import csv
import importlib.util
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from src.train import train
from tests.conftest import _tune_for_tests, compose_config


def train_with_logger(name: str, tmp_path: Path, extra: list[str] | None = None) -> DictConfig:
    cfg = compose_config(
        "train.yaml", [f"logger={name}", "data.train_val_test_split=[1000,500,500]", *(extra or [])]
    )
    logger_cfg = cfg.logger
    _tune_for_tests(cfg, tmp_path)
    with open_dict(cfg):
        cfg.logger = logger_cfg
        cfg.seed = 0
    HydraConfig().set_config(cfg)
    train(cfg)
    return cfg


def test_csv_logger(tmp_path: Path) -> None:
    train_with_logger("csv", tmp_path)
    files = list(tmp_path.glob("csv/**/metrics.csv"))
    assert files, "CSVLogger wrote no metrics.csv"
    rows = list(csv.DictReader(files[0].open()))
    assert any(r.get("val/acc") for r in rows)
    assert any(r.get("test/acc") for r in rows)
    hparams = OmegaConf.load(next(tmp_path.glob("csv/**/hparams.yaml")))
    assert hparams["model/params/total"] > 0


def test_tensorboard_logger(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is in the dev extra; install lhte[dev]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_with_logger("tensorboard", tmp_path)
    events = list(tmp_path.glob("tensorboard/**/events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "val/acc" in acc.Tags()["scalars"]


@pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None, reason="mlflow not installed (lhte[loggers])"
)
def test_mlflow_local_database(tmp_path: Path) -> None:
    import mlflow

    train_with_logger("mlflow", tmp_path)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs(client.get_experiment_by_name("train").experiment_id)
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert history and 0.0 < history[-1].value <= 1.0


@pytest.mark.skipif(
    importlib.util.find_spec("wandb") is None, reason="wandb not installed (lhte[loggers])"
)
def test_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train_with_logger("wandb", tmp_path, ["logger.wandb.offline=true"])
    runs = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert runs, "wandb offline run file missing"
