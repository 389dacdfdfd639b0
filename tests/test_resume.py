"""Exact resume, atomic checkpoints and ckpt_path checks.

A run interrupted mid-epoch and resumed from its last checkpoint must end with the same
weights and test metrics as an uninterrupted run with the same seed (deterministic, CPU).
The fast test interrupts in-process; the slow ones cover epoch boundaries and SIGKILL a real
``python src/train.py`` that is then resumed with ``ckpt_path=last``.
"""

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from lightning import Callback, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

import src.train
from src.callbacks.model_checkpoint import AtomicCheckpointIO, ResumableModelCheckpoint
from src.data.base_datamodule import EpochSampler, ResumableDataLoader
from src.train import train
from src.utils.checkpoints import (
    atomic_torch_save,
    collect_rng_state,
    find_last_checkpoint,
    resolve_ckpt_path,
    restore_rng_state,
    validate_checkpoint,
)
from tests.conftest import ROOT

# 384 training images in batches of 32: 12 steps per epoch.
SMALL = {
    "data.train_val_test_split": [384, 96, 128],
    "data.batch_size": 32,
    "data.augment": {"crop_padding": 2},  # augmentation draws from the global RNG
    "trainer.deterministic": True,
    "trainer.max_epochs": 2,
    "callbacks.model_checkpoint.every_n_train_steps": 5,
    "callbacks.model_checkpoint.save_top_k": -1,
    "seed": 7,
}
KILLER = f"{__name__}.KillAtStep"


class Interrupted(RuntimeError):
    """Raised by :class:`KillAtStep` to stop a run in-process."""


class KillAtStep(Callback):
    """Test-only: stop training once ``global_step`` reaches ``step`` (before that step's save).

    :param step: Optimizer step after which the run dies.
    :param sigkill: Kill the process with SIGKILL (no cleanup at all) instead of raising.
    """

    def __init__(self, step: int, sigkill: bool = False) -> None:
        self.step = step
        self.sigkill = sigkill

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        """Die at the chosen step; ModelCheckpoint runs after this hook, so it did not save."""
        if trainer.global_step >= self.step:
            if self.sigkill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise Interrupted(f"killed at step {trainer.global_step}")


def _run(cfg: DictConfig, out: Path, **overrides: object) -> dict[str, float]:
    cfg = cfg.copy()
    for key, value in {**SMALL, **overrides}.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    HydraConfig().set_config(cfg)
    metrics, _ = train(cfg)
    return {k: float(v) for k, v in metrics.items()}


def _assert_same_weights(a: Path, b: Path) -> None:
    first = torch.load(a, weights_only=True)["state_dict"]
    second = torch.load(b, weights_only=True)["state_dict"]
    assert first.keys() == second.keys()
    for name, value in first.items():
        torch.testing.assert_close(second[name], value, rtol=0, atol=1e-6, msg=name)


def _interrupt_and_resume(
    cfg: DictConfig, tmp_path: Path, kill_step: int, ckpt_step: int, ckpt_epoch: int, **extra
) -> None:
    full = _run(cfg, tmp_path / "full", **extra)
    with pytest.raises(Interrupted):
        killer = {"_target_": KILLER, "step": kill_step}
        _run(cfg, tmp_path / "a", **{"callbacks.killer": killer}, **extra)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert (ckpt["epoch"], ckpt["global_step"]) == (ckpt_epoch, ckpt_step)
    torch.manual_seed(123)  # whatever the global RNG holds now, resuming restores it

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = _run(cfg, tmp_path / "b", ckpt_path=str(last), **extra)
    assert not [w for w in caught if "not resumable" in str(w.message)]  # Lightning's warning

    _assert_same_weights(
        tmp_path / "full" / "checkpoints" / "last.ckpt",
        tmp_path / "b" / "checkpoints" / "last.ckpt",
    )
    for key in ("test/acc", "test/loss", "val/acc_best"):
        assert resumed[key] == pytest.approx(full[key], abs=1e-6), key


def test_interrupted_mid_epoch_resumes_exactly(cfg_train: DictConfig, tmp_path: Path) -> None:
    """Killed at step 18 (epoch 1), resumed from step 15: 3 of 12 batches of epoch 1 done."""
    _interrupt_and_resume(cfg_train, tmp_path, kill_step=18, ckpt_step=15, ckpt_epoch=1)


@pytest.mark.slow
def test_per_sample_pipeline_with_workers_resumes_exactly(
    cfg_train: DictConfig, tmp_path: Path
) -> None:
    """DataLoader workers prefetch ahead; the saved position is what the model trained on.

    Without augmentation: worker-side random transforms cannot continue exactly (docs/resume.md).
    """
    extra = {"data.in_memory": False, "data.num_workers": 2, "data.augment": None}
    _interrupt_and_resume(cfg_train, tmp_path, kill_step=18, ckpt_step=15, ckpt_epoch=1, **extra)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("every_n", "kill_step"),
    [(12, 15), (None, 15)],
    ids=["saved_on_last_batch", "saved_after_validation"],
)
def test_resume_from_epoch_boundary(
    cfg_train: DictConfig, tmp_path: Path, every_n: int | None, kill_step: int
) -> None:
    """Checkpoints at the end of epoch 0 (step 12) resume at the start of epoch 1."""
    extra = {"callbacks.model_checkpoint.every_n_train_steps": every_n}
    _interrupt_and_resume(cfg_train, tmp_path, kill_step, ckpt_step=12, ckpt_epoch=0, **extra)


@pytest.mark.slow
def test_sigkill_then_ckpt_path_last(tmp_path: Path) -> None:
    """A real run killed with SIGKILL mid-epoch, resumed by `ckpt_path=last`, matches."""
    args = [
        f"paths.log_dir={tmp_path}",
        "data.train_val_test_split=[384,96,128]",
        "data.batch_size=32",
        "+data.augment.crop_padding=2",
        "trainer=cpu",
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
        "callbacks.model_checkpoint.every_n_train_steps=5",
        "~callbacks.rich_progress_bar",
        "extras.enforce_tags=false",
        "extras.print_config=false",
        "seed=7",
    ]

    def train_cli(run: str, *more: str) -> subprocess.CompletedProcess:
        command = [
            sys.executable,
            "src/train.py",
            *args,
            f"hydra.run.dir={tmp_path}/train/runs/{run}",
            *more,
        ]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)

    killed = train_cli(
        "killed",
        f"+callbacks.killer._target_={KILLER}",
        "+callbacks.killer.step=18",
        "+callbacks.killer.sigkill=true",
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (
        torch.load(tmp_path / "train/runs/killed/checkpoints/last.ckpt", weights_only=True)[
            "global_step"
        ]
        == 15
    )

    resumed = train_cli("resumed", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        f"ckpt_path=last: using {tmp_path}/train/runs/killed/checkpoints/last.ckpt"
        in resumed.stdout + resumed.stderr
    )
    full = train_cli("full")
    assert full.returncode == 0, full.stderr[-3000:]

    _assert_same_weights(
        tmp_path / "train/runs/full/checkpoints/last.ckpt",
        tmp_path / "train/runs/resumed/checkpoints/last.ckpt",
    )
    info = {
        run: yaml.safe_load((tmp_path / f"train/runs/{run}/run_info.yaml").read_text())
        for run in ("resumed", "full")
    }
    assert info["resumed"]["ckpt_path"] == str(tmp_path / "train/runs/killed/checkpoints/last.ckpt")
    for key in ("test/acc", "test/loss"):
        assert info["resumed"]["metrics"][key] == pytest.approx(
            info["full"]["metrics"][key], abs=1e-6
        )


# ------------------------------------------------------------------ data order and RNG
def test_epoch_sampler_order_depends_on_seed_and_epoch_and_skips() -> None:
    data = list(range(20))
    sampler = EpochSampler(data, seed=3)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(epoch1) == data
    assert epoch1 == _order(data, seed=3, epoch=1) != _order(data, seed=4, epoch=1)
    sampler.set_epoch(2)
    assert list(sampler) != epoch1
    sampler.set_epoch(1)
    sampler.skip = 8
    assert list(sampler) == epoch1[8:]
    assert list(sampler) == epoch1  # the skip applies to one iteration only
    assert len(sampler) == 20  # Lightning's batches-per-epoch count stays that of a full epoch


def _order(data: list, seed: int, epoch: int) -> list:
    sampler = EpochSampler(data, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_loader_state_round_trip() -> None:
    """The loader's state is the position the model reached; a new loader continues from it."""
    data = torch.arange(40)
    position = [12, 5]  # batches trained this epoch, batches per epoch (before normalization)

    def make() -> ResumableDataLoader:
        return ResumableDataLoader(
            data,
            batch_size=4,
            sampler=EpochSampler(data, seed=5),
            position=lambda: (position[0], position[1]),
            generator=torch.Generator(),
        )

    loader = make()
    loader.sampler.set_epoch(3)
    position[:] = [2, 10]
    state = loader.state_dict()
    assert state == {"seed": 5, "epoch": 3, "samples": 8}
    order = torch.cat(list(loader)).tolist()

    again = make()
    again.sampler.seed = 99  # the saved seed wins
    again.load_state_dict(state)
    assert torch.cat(list(again)).tolist() == order[8:]

    position[:] = [10, 10]  # the epoch was over: resume at the start of the next one
    assert loader.state_dict() == {"seed": 5, "epoch": 4, "samples": 0}


def test_loader_iteration_leaves_global_rng_alone(cfg_train: DictConfig) -> None:
    """Iterating any loader must not draw from the global RNG (it would shift resumed runs)."""
    from hydra.utils import instantiate

    dm = instantiate(cfg_train.data)
    dm.setup()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        next(iter(loader))
    assert torch.equal(torch.get_rng_state(), before)


def test_rng_state_round_trip_is_weights_only_safe(tmp_path: Path) -> None:
    import random

    import numpy as np

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    atomic_torch_save({"rng": collect_rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])
    assert got[2] == expected[2]


# ---------------------------------------------------------------- atomic checkpoint files
def test_crash_while_saving_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)
    real_save = torch.save

    def crash_midway(obj: object, file: object, *args: object, **kwargs: object) -> None:
        real_save({"step": 2, "w": torch.zeros(1000)}, file)
        file.truncate(100)  # half-written file, then the process dies
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()

    assert torch.load(path, weights_only=True)["step"] == 1  # the previous checkpoint is intact
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left
    io.save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=True)["step"] == 3
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_full_disk_is_named_and_the_previous_checkpoint_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save on a full disk says "unexpected pos ..."; the error says the disk is full."""
    import shutil

    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, target)

    def full_disk(obj: object, file: object) -> None:
        raise RuntimeError(
            "[enforce fail at inline_container.cc:820] . unexpected pos 494848 vs 494736"
        )

    monkeypatch.setattr(torch, "save", full_disk)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1024))
    with pytest.raises(OSError, match=r"the disk holding .* is full .*paths.output_dir"):
        atomic_torch_save({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no half-written file left


def test_model_checkpoint_makes_saves_atomic(tmp_path: Path) -> None:
    callback = ResumableModelCheckpoint(dirpath=tmp_path)
    trainer = Trainer(accelerator="cpu", callbacks=[callback], logger=False)
    callback.setup(trainer, LightningModule(), "fit")
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_step_checkpoint_on_the_last_batch_is_written(
    cfg_train: DictConfig, tmp_path: Path
) -> None:
    """every_n_train_steps = steps per epoch: stock Lightning 2.6 postpones, then drops the save."""
    overrides = {"trainer.max_epochs": 1, "data.augment": None, "test": False}
    overrides["callbacks.model_checkpoint.every_n_train_steps"] = 12
    _run(cfg_train, tmp_path, **overrides)
    # (Lightning's end-of-training save writes last.ckpt, but never the monitored checkpoint.)
    ckpt = torch.load(tmp_path / "checkpoints" / "epoch_000.ckpt", weights_only=True)
    assert ckpt["global_step"] == 12


def test_best_checkpoints_survive_a_new_run_folder(tmp_path: Path) -> None:
    """Resumed into a new folder, the earlier best files still count (Lightning drops them)."""
    old = tmp_path / "old"
    old.mkdir()
    for name in ("a.ckpt", "b.ckpt"):
        (old / name).write_bytes(b"x")
    state = {
        "dirpath": str(old),
        "best_model_path": str(old / "b.ckpt"),
        "best_model_score": torch.tensor(0.9),
        "best_k_models": {
            str(old / "a.ckpt"): torch.tensor(0.8),
            str(old / "b.ckpt"): torch.tensor(0.9),
            str(old / "gone.ckpt"): torch.tensor(0.95),
        },
    }
    callback = ResumableModelCheckpoint(
        dirpath=tmp_path / "new", monitor="val/acc_best", mode="max", save_top_k=2
    )
    callback.load_state_dict(state)
    assert callback.best_model_path == str(old / "b.ckpt")  # gone.ckpt was deleted: ignored
    assert float(callback.best_model_score) == pytest.approx(0.9)
    assert callback.kth_best_model_path == str(old / "a.ckpt")
    assert float(callback.kth_value) == pytest.approx(0.8)


# ---------------------------------------------------------------------- ckpt_path checks
@pytest.fixture(scope="module")
def real_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """last.ckpt of a real two-batch run."""
    from tests.conftest import _tune_for_tests, compose_config

    out = tmp_path_factory.mktemp("real")
    cfg = compose_config(
        "train.yaml", ["data.train_val_test_split=[256,64,64]", "data.batch_size=32"]
    )
    _tune_for_tests(cfg, out)
    with open_dict(cfg):
        cfg.trainer.limit_train_batches = 2
        cfg.test = False
    HydraConfig().set_config(cfg)
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


def test_real_checkpoint_is_valid_and_weights_only(real_ckpt: Path) -> None:
    assert validate_checkpoint(real_ckpt, resume=True) == real_ckpt
    ckpt = torch.load(real_ckpt, weights_only=True)
    assert {"state_dict", "optimizer_states", "loops", "MNISTDataModule"} <= set(ckpt)
    assert ckpt["MNISTDataModule"]["rng"]["torch"].dtype == torch.uint8
    loader_state = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state == [{"seed": loader_state[0]["seed"], "epoch": 1, "samples": 0}]


def test_bad_checkpoints_are_refused_with_the_path(real_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        validate_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(FileNotFoundError, match="is a folder"):
        validate_checkpoint(tmp_path)
    (tmp_path / "random.ckpt").write_bytes(b"\x13" + os.urandom(5000))
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "notes.ckpt").write_text("epoch 3: val/acc 0.98\n")
    reasons = {
        "random.ckpt": "it is neither a torch zip archive nor a legacy torch file",
        "empty.ckpt": r"it is empty \(0 bytes\)",
        "notes.ckpt": r"it is a text file \(it starts with 'epoch 3: val/acc 0.98'\)",
    }
    for name, reason in reasons.items():
        with pytest.raises(ValueError, match=f"ckpt_path={tmp_path / name}: {reason}"):
            validate_checkpoint(tmp_path / name)
    (tmp_path / "truncated.ckpt").write_bytes(real_ckpt.read_bytes()[:20_000])
    with pytest.raises(ValueError, match="truncated.ckpt is not a readable checkpoint"):
        validate_checkpoint(tmp_path / "truncated.ckpt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="is not a Lightning checkpoint: it lacks"):
        validate_checkpoint(tmp_path / "plain.pt")
    torch.save(
        {
            "state_dict": {},
            "pytorch-lightning_version": "2",
            "epoch": 0,
            "global_step": 1,
            "x": Path("/"),
        },
        tmp_path / "unsafe.ckpt",
    )
    with pytest.raises(ValueError, match="Weights only load failed"):
        validate_checkpoint(tmp_path / "unsafe.ckpt")
    weights = torch.load(real_ckpt, weights_only=True)
    del weights["optimizer_states"]
    torch.save(weights, tmp_path / "weights.ckpt")
    assert validate_checkpoint(tmp_path / "weights.ckpt")  # fine for eval/test
    with pytest.raises(ValueError, match="holds weights only"):
        validate_checkpoint(tmp_path / "weights.ckpt", resume=True)


def test_train_checks_ckpt_path_before_building_anything(
    cfg_train: DictConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_building(*args: object, **kwargs: object) -> None:
        raise AssertionError("something was built before ckpt_path was checked")

    monkeypatch.setattr(src.train.hydra.utils, "instantiate", no_building)
    with open_dict(cfg_train):
        cfg_train.ckpt_path = str(tmp_path / "missing.ckpt")
    HydraConfig().set_config(cfg_train)
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        train(cfg_train)


# --------------------------------------------------------------------- ckpt_path=last
def _fake_run(
    root: Path, rel: str, experiment: str | None, mtime: float, hydra: bool = True
) -> Path:
    run = root / rel
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"x")
    os.utime(ckpt, (mtime, mtime))
    if hydra:
        (run / ".hydra").mkdir()
        choices = {"experiment": experiment, "data": "mnist"}
        # A real hydra.yaml holds interpolations; they must not get in the way.
        text = yaml.safe_dump(
            {"hydra": {"run": {"dir": "${paths.log_dir}"}, "runtime": {"choices": choices}}}
        )
        (run / ".hydra" / "hydra.yaml").write_text(text)
    return ckpt


def test_find_last_checkpoint_picks_newest_of_same_experiment(tmp_path: Path) -> None:
    plain_old = _fake_run(tmp_path, "runs/2024-01-01_00-00-00", None, 100)
    plain_new = _fake_run(tmp_path, "multiruns/2024-01-02_00-00-00/3", None, 300)
    cnn = _fake_run(tmp_path, "runs/2024-01-03_00-00-00", "mnist_cnn", 200)
    _fake_run(tmp_path, "runs/2024-01-04_00-00-00", None, 400, hydra=False)  # unknown experiment
    assert find_last_checkpoint(tmp_path, None) == plain_new
    assert find_last_checkpoint(tmp_path, "mnist_cnn") == cnn
    os.utime(plain_old, (500, 500))
    assert find_last_checkpoint(tmp_path, None) == plain_old
    with pytest.raises(FileNotFoundError) as err:
        find_last_checkpoint(tmp_path, "mnist_vit")
    message = str(err.value)
    assert "experiment=mnist_vit" in message and str(tmp_path) in message
    assert f"{cnn} (experiment=mnist_cnn)" in message and "no .hydra/hydra.yaml" in message


def test_find_last_checkpoint_treats_an_old_name_as_its_new_name(tmp_path: Path) -> None:
    """``cnn_mnist`` is an alias of ``mnist_cnn``: a run under either name resumes under both."""
    old = _fake_run(tmp_path, "runs/2024-01-01_00-00-00", "cnn_mnist", 100)
    assert find_last_checkpoint(tmp_path, "mnist_cnn") == old
    new = _fake_run(tmp_path, "runs/2024-01-02_00-00-00", "mnist_cnn", 200)
    assert find_last_checkpoint(tmp_path, "cnn_mnist") == new
    with pytest.raises(FileNotFoundError, match="experiment=mnist_vit"):
        find_last_checkpoint(tmp_path, "mnist_vit")


def test_ckpt_path_last_resolves_with_the_runs_experiment(real_ckpt: Path, tmp_path: Path) -> None:
    from tests.conftest import compose_config

    cfg = compose_config(
        "train.yaml", ["experiment=mnist_sdn", "ckpt_path=last", f"paths.log_dir={tmp_path}"]
    )
    HydraConfig().set_config(cfg)
    with pytest.raises(FileNotFoundError, match="experiment=mnist_sdn"):
        resolve_ckpt_path(cfg, resume=True)
    ckpt = _fake_run(tmp_path / "train", "runs/x", "mnist_sdn", 100)
    ckpt.write_bytes(real_ckpt.read_bytes())
    assert resolve_ckpt_path(cfg, resume=True) == str(ckpt)
    assert cfg.ckpt_path == str(ckpt)  # recorded for logs and run_info.yaml


@pytest.mark.parametrize("on_train_epoch_end", [False, True])
def test_last_checkpoint_follows_every_epoch(
    cfg_train: DictConfig, tmp_path: Path, on_train_epoch_end: bool
) -> None:
    """last.ckpt is the newest epoch even when the monitored metric stops improving.

    With lr=0 the accuracy never changes, so stock Lightning 2.6 saves the top-k file (and with
    it last.ckpt) only after epoch 0, and ckpt_path=last would go back two epochs.
    """
    overrides = {
        "trainer.max_epochs": 3,
        "data.augment": None,
        "test": False,
        "model.optimizer.lr": 0.0,
        "callbacks.model_checkpoint.every_n_train_steps": None,
        "callbacks.model_checkpoint.save_top_k": 1,
        "callbacks.model_checkpoint.save_on_train_epoch_end": on_train_epoch_end,
    }
    _run(cfg_train, tmp_path, **overrides)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert names == ["epoch_000.ckpt", "last.ckpt"]  # the metric improved only once
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 36


def _save_run_config(ckpt: Path, cfg: DictConfig) -> None:
    """Write ``cfg`` as the run's ``.hydra/config.yaml`` (unresolved, as Hydra saves it)."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    (ckpt.parent.parent / ".hydra" / "config.yaml").write_text(yaml.safe_dump(plain))


def _cfg(config: str, tmp_path: Path, *overrides: str) -> DictConfig:
    from tests.conftest import compose_config

    cfg = compose_config(config, ["ckpt_path=last", f"paths.log_dir={tmp_path}", *overrides])
    HydraConfig().set_config(cfg)
    return cfg


def test_ckpt_path_last_skips_runs_of_another_model(real_ckpt: Path, tmp_path: Path) -> None:
    cfg = _cfg("train.yaml", tmp_path)
    matching = _fake_run(tmp_path / "train", "runs/a", None, 100)
    matching.write_bytes(real_ckpt.read_bytes())
    _save_run_config(matching, _cfg("train.yaml", tmp_path, "data.data_dir=/elsewhere/"))
    other = _fake_run(tmp_path / "train", "runs/b", None, 200)  # newer, another network
    _save_run_config(other, _cfg("train.yaml", tmp_path, "model=mnist_cnn_421k"))
    cfg = _cfg("train.yaml", tmp_path, "data.num_workers=7")  # loader knobs may differ
    assert resolve_ckpt_path(cfg, resume=True) == str(matching)

    matching.unlink()  # only the other model's run is left: a clear refusal
    with pytest.raises(ValueError) as err:
        resolve_ckpt_path(_cfg("train.yaml", tmp_path), resume=True)
    message = str(err.value)
    assert str(other) in message and "model.net._target_: run has" in message
    assert "SimpleCNN" in message and "SimpleDenseNet" in message


def test_resume_takes_the_checkpoints_learning_rate(real_ckpt: Path, tmp_path: Path) -> None:
    from src.utils.provenance import RUN_INFO, write_run_info

    ckpt = _fake_run(tmp_path / "train", "runs/a", None, 100)
    ckpt.write_bytes(real_ckpt.read_bytes())
    _save_run_config(ckpt, _cfg("train.yaml", tmp_path, "model.optimizer.lr=0.001"))
    cfg = _cfg("train.yaml", tmp_path, "model.optimizer.lr=0.5")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "new_run")
    write_run_info(cfg)
    assert resolve_ckpt_path(cfg, resume=True) == str(ckpt)
    assert cfg.model.optimizer.lr == 0.001  # what the restored optimizer state trains with
    info = yaml.safe_load((tmp_path / "new_run" / RUN_INFO).read_text())
    assert info["config"]["model"]["optimizer"]["lr"] == 0.001

    # A run folder that came with the checkpoint cannot slip in another optimizer target.
    hostile = _cfg("train.yaml", tmp_path)
    with open_dict(hostile):
        hostile.model.optimizer._target_ = "src.utils.checkpoints.atomic_torch_save"
    _save_run_config(ckpt, hostile)
    cfg = _cfg("train.yaml", tmp_path)
    with pytest.raises(ValueError, match="model.optimizer._target_='src.utils.checkpoints"):
        resolve_ckpt_path(cfg, resume=True)
    assert cfg.model.optimizer._target_ == "torch.optim.Adam"


def test_eval_ckpt_path_last_searches_the_training_runs(real_ckpt: Path, tmp_path: Path) -> None:
    cfg = _cfg("eval.yaml", tmp_path)
    assert cfg.ckpt_search_dir == f"{tmp_path}/train"
    ckpt = _fake_run(tmp_path / "train", "runs/a", None, 100)
    ckpt.write_bytes(real_ckpt.read_bytes())
    _save_run_config(ckpt, _cfg("train.yaml", tmp_path))
    assert resolve_ckpt_path(cfg) == str(ckpt)
    _save_run_config(ckpt, _cfg("train.yaml", tmp_path, "data.batch_size=7"))
    assert resolve_ckpt_path(_cfg("eval.yaml", tmp_path)) == str(ckpt)  # fine for testing
    _save_run_config(ckpt, _cfg("train.yaml", tmp_path, "model.net.lin1_size=8"))
    with pytest.raises(ValueError, match="model.net.lin1_size: run has 8, this config has"):
        resolve_ckpt_path(_cfg("eval.yaml", tmp_path))
