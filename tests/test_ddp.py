"""Distributed data parallel: `trainer=ddp` / `trainer=ddp_sim` configs and a real 2-process run.

The default suite checks, without starting processes, that the configs build the intended
Trainer (DDP strategy, world size, the script-relaunching launcher) and that the global batch
size is divided across processes. The slow test launches ``python src/train.py trainer=ddp_sim``
(2 CPU processes, gloo) and compares it with a single-process run.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from hydra.core.hydra_config import HydraConfig
from lightning import Trainer
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from omegaconf import DictConfig, open_dict

from src.train import train
from src.utils import instantiate_model
from tests.conftest import ROOT, TINY_SPLIT, compose_config


def compose_trainer_config(overrides: list[str], tmp_path: Path) -> DictConfig:
    """The train config with ``overrides`` on the tiny split, its outputs in ``tmp_path``."""
    cfg = compose_config("train.yaml", [*overrides, TINY_SPLIT])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    return cfg


def build_trainer(cfg: DictConfig, **overrides) -> Trainer:
    """The Trainer of ``cfg`` (no callbacks or loggers); building it starts no process."""
    return hydra.utils.instantiate(
        cfg.trainer, logger=False, enable_progress_bar=False, **overrides
    )


def batch_size_per_device(cfg: DictConfig, trainer: Trainer) -> int:
    """What the datamodule of ``cfg`` feeds each process once attached to ``trainer``."""
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.trainer = trainer
    datamodule.setup("fit")
    return datamodule.batch_size_per_device


def test_ddp_sim_builds_a_two_process_cpu_ddp_trainer(tmp_path: Path) -> None:
    cfg = compose_trainer_config(["trainer=ddp_sim"], tmp_path)
    trainer = build_trainer(cfg)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.world_size == 2 and trainer.num_devices == 2
    assert trainer.strategy.root_device.type == "cpu"  # gloo is the process group backend
    # The launcher `trainer=ddp` uses too: ranks >0 re-run the script with Hydra's run dir.
    assert isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)
    assert batch_size_per_device(cfg, trainer) == cfg.data.batch_size // 2


def test_ddp_config_and_global_batch_size_over_nodes(tmp_path: Path) -> None:
    """`trainer=ddp` is valid Trainer arguments; the batch splits over devices * nodes."""
    cfg = compose_trainer_config(["trainer=ddp", "data.batch_size=128"], tmp_path)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.strategy == "ddp"
    assert cfg.trainer.sync_batchnorm is True
    # No GPU here: the same arguments on CPU, as on 2 nodes of 4 devices.
    trainer = build_trainer(cfg, accelerator="cpu", devices=4, num_nodes=2)
    assert trainer.world_size == 8
    assert batch_size_per_device(cfg, trainer) == 16


def test_global_batch_size_must_divide_by_world_size(tmp_path: Path) -> None:
    cfg = compose_trainer_config(["trainer=ddp_sim", "data.batch_size=127"], tmp_path)
    with pytest.raises(RuntimeError, match=r"Batch size \(127\).*devices \(2\)"):
        batch_size_per_device(cfg, build_trainer(cfg))


# ------------------------------------------------------------------------------ real run
def last_values(metrics_csv: Path) -> dict[str, float]:
    """The last logged value of every column of a CSVLogger ``metrics.csv``."""
    values: dict[str, float] = {}
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


def run_ddp_sim(log_dir: Path) -> Path:
    """``python src/train.py trainer=ddp_sim`` for one epoch on the tiny split; its run folder."""
    command = [
        sys.executable,
        "src/train.py",
        "trainer=ddp_sim",
        TINY_SPLIT,
        "trainer.max_epochs=1",
        "seed=0",
        "logger=csv",
        f"paths.log_dir={log_dir}",
        "~callbacks.rich_progress_bar",
        "+trainer.enable_progress_bar=false",
        "extras.print_config=false",
        "extras.enforce_tags=false",
    ]
    done = subprocess.run(
        command, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = list((log_dir / "train" / "runs").iterdir())
    # One timestamped folder per run, not one per rank (rank 1 gets hydra.run.dir from rank 0).
    assert len(runs) == 1, runs
    return runs[0]


def reevaluate(cfg: DictConfig, ckpt_path: Path) -> dict[str, float]:
    """Validation and test accuracy of a checkpoint in one process, on the same split."""
    trainer = build_trainer(cfg, enable_checkpointing=False, enable_model_summary=False)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = instantiate_model(cfg.model)
    val = trainer.validate(model, datamodule, ckpt_path=str(ckpt_path), weights_only=True)[0]
    test = trainer.test(model, datamodule, ckpt_path=str(ckpt_path), weights_only=True)[0]
    return {"val/acc": val["val/acc"], "test/acc": test["test/acc"]}


@pytest.mark.slow
def test_ddp_sim_trains_like_a_single_process(cfg_train: DictConfig, tmp_path: Path) -> None:
    """Two CPU processes: one run folder, synced metrics, accuracy as in one process."""
    import torch

    run_dir = run_ddp_sim(tmp_path / "ddp")
    ckpts = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert ckpts == {"epoch_000.ckpt", "last.ckpt"}, ckpts
    ddp = last_values(next(run_dir.glob("csv/version_*/metrics.csv")))

    # Each process took half of each global batch of 128: as many optimizer steps as one process
    # over all 2,000 images (broken sharding would double them, a wrong split would halve them).
    ddp_ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ddp_ckpt["global_step"] == -(-2000 // 128)

    # Synced metrics: the logged values are those of the whole validation and test sets, which
    # the same checkpoint gets again in a single process (DistributedSampler pads nothing here:
    # 500 and 1,000 images split evenly over 2 ranks). Rank 0's half alone would differ.
    alone = reevaluate(cfg_train, run_dir / "checkpoints" / "epoch_000.ckpt")
    assert ddp["val/acc"] == pytest.approx(alone["val/acc"], abs=1e-6)
    assert ddp["test/acc"] == pytest.approx(alone["test/acc"], abs=1e-6)
    assert ddp["val/acc_best"] == pytest.approx(ddp["val/acc"], abs=1e-6)  # one epoch

    # The same training in one process: same seed, same global batch size (128).
    HydraConfig().set_config(cfg_train)
    single, _ = train(cfg_train)
    single_acc = float(single["test/acc"])
    # Within noise, not equal: each rank draws its own DistributedSampler permutation shard,
    # and BatchNorm normalizes each rank's 64 images with their own statistics (SyncBatchNorm
    # needs GPUs). Over seeds 0-4 one process scored 74.8-80.2% on this split after one epoch,
    # so two honest runs can differ by a few points; 8 points is ~2.5 standard deviations of a
    # difference. Far above chance (10%) in both, so a run that does not learn fails.
    assert abs(ddp["test/acc"] - single_acc) < 0.08, (ddp, single_acc)
    assert ddp["test/acc"] > 0.6 and single_acc > 0.6, (ddp, single_acc)


def test_ddp_trials_of_a_local_multirun_start_their_own_ranks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inside ``-m`` a DDP job starts its ranks itself (Lightning would re-run the sweep);
    single runs, one-device trials and externally started ranks are left to Lightning."""
    from src.utils.ddp_trials import needs_trial_ranks

    for var in ("LOCAL_RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    ddp = {"strategy": "ddp", "devices": 2, "num_nodes": 1}
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert needs_trial_ranks(ddp, multirun=True, launcher=basic)
    assert needs_trial_ranks({**ddp, "devices": [0, 1]}, multirun=True, launcher=basic)
    assert not needs_trial_ranks(ddp, multirun=False, launcher=basic)
    assert not needs_trial_ranks({**ddp, "devices": 1}, multirun=True, launcher=basic)
    assert not needs_trial_ranks({**ddp, "strategy": "auto"}, multirun=True, launcher=basic)
    submitit = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert not needs_trial_ranks(ddp, multirun=True, launcher=submitit)
    monkeypatch.setenv("LOCAL_RANK", "0")  # torchrun started the ranks itself
    assert not needs_trial_ranks(ddp, multirun=True, launcher=basic)


@pytest.mark.slow
def test_optuna_search_with_ddp_trials(tmp_path: Path) -> None:
    """Two Optuna trials with ``trainer=ddp_sim``: each in its own folder, trained by two
    processes, and the value the study records is the one its folder reports."""
    import optuna
    import yaml

    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        "src/train.py",
        "-m",
        "hparams_search=mnist_optuna",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}",
        "hydra.sweeper.study_name=ddp",
        f"hydra.sweep.dir={sweep}",
        "trainer=ddp_sim",
        "data.train_val_test_split=[512,128,128]",
        "trainer.max_epochs=1",
        "logger=csv",
        "test=false",
        "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null",
        "extras.print_config=false",
        "extras.enforce_tags=false",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert output.count("DDP trial: starting ranks 1-1") == 2
    assert output.count("Starting with 2 processes") == 2  # one two-process group per trial
    study = optuna.load_study(study_name="ddp", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        folder = sweep / f"trial_{trial.number:03d}"
        info = yaml.safe_load((folder / "run_info.yaml").read_text())
        assert info["status"] == "finished"
        assert trial.value == pytest.approx(info["metrics"]["val/acc_best"])
