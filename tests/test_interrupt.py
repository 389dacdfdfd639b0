"""Ctrl-C/SIGTERM save the current step and resume exactly; one run folder per run.

Real ``python src/train.py`` processes on a tiny MNIST split: one runs through, two get a
SIGINT or a SIGTERM mid-epoch (sent from here, while a test callback holds training at a known
step) and are resumed from the checkpoint they saved. The resumed runs must end with the
uninterrupted run's weights and logged train metrics of the resumed epoch.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning import Callback, Trainer
from omegaconf import DictConfig, OmegaConf

from src.callbacks.interrupt import InterruptCheckpoint
from src.utils.utils import RunInterrupted
from tests.conftest import ROOT, compose_config
from tests.test_resume import _assert_same_weights, _run

PAUSE = f"{__name__}.PauseUntilSignalled"
PAUSE_STEP = 3  # of 7 steps (200 images in batches of 32): mid-epoch
ARGS = [
    "data.train_val_test_split=[200,100,100]",
    "data.batch_size=32",
    "+data.augment.crop_padding=2",  # draws from the global RNG: the resume must restore it
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.deterministic=true",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "~callbacks.rich_progress_bar",
    "~callbacks.test_figures",
    "extras.enforce_tags=false",
    "extras.print_config=false",
    "seed=3",
]


class PauseUntilSignalled(Callback):
    """Test-only: at ``step``, print a marker and hold training until a signal is recorded.

    :param step: Optimizer step to hold at.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        """Wait (at most 60 s) for :class:`InterruptCheckpoint` to record a signal."""
        if trainer.global_step != self.step:
            return
        watcher = next(c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint))
        print(f"PAUSED at step {self.step}", flush=True)
        deadline = time.monotonic() + 60
        while watcher.signum is None and time.monotonic() < deadline:
            time.sleep(0.02)


def _start(log_dir: Path, *more: str) -> subprocess.Popen:
    command = [sys.executable, "src/train.py", f"paths.log_dir={log_dir}", *ARGS, *more]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _signal_when_paused(proc: subprocess.Popen, signum: int) -> list[str]:
    """Read output until the pause marker, send ``signum``; return the lines read so far."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(f"PAUSED at step {PAUSE_STEP}"):
            proc.send_signal(signum)
            return lines
    raise AssertionError("training ended before the pause:\n" + "".join(lines[-40:]))


def _finish(proc: subprocess.Popen, lines: list[str] | None = None) -> tuple[int, str, Path]:
    """Wait for ``proc``; return its exit code, output and run folder."""
    out, _ = proc.communicate(timeout=300)
    text = re.sub(r"\x1b\[[0-9;]*m", "", "".join(lines or []) + out)  # colorlog's colours
    found = re.findall(r"Output dir: (\S+)", text)
    assert found, text[-3000:]
    return proc.returncode, text, Path(found[-1])


def _run_info(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "run_info.yaml").read_text())


@pytest.mark.slow
def test_sigint_and_sigterm_save_the_step_and_resume_exactly(tmp_path: Path) -> None:
    """Three runs started together: separate folders; the interrupted two resume exactly."""
    pause = [f"+callbacks.pause._target_={PAUSE}", f"+callbacks.pause.step={PAUSE_STEP}"]
    full = _start(tmp_path)
    stopped = {sig: _start(tmp_path, *pause) for sig in (signal.SIGINT, signal.SIGTERM)}
    read = {sig: _signal_when_paused(proc, sig) for sig, proc in stopped.items()}
    code, text, full_dir = _finish(full)
    assert code == 0, text[-3000:]

    resumed = {}
    dirs = {full_dir}
    for sig, proc in stopped.items():
        code, text, run_dir = _finish(proc, read[sig])
        assert code == 128 + sig, text[-3000:]  # 130 for SIGINT, 143 for SIGTERM
        last = run_dir / "checkpoints" / "last.ckpt"
        assert f"Resume with ckpt_path={last} (or ckpt_path=last)" in text
        ckpt = torch.load(last, weights_only=True)
        assert (ckpt["epoch"], ckpt["global_step"]) == (0, PAUSE_STEP + 1)  # mid-epoch
        info = _run_info(run_dir)
        assert info["status"] == "interrupted", info.get("error")
        assert str(last) in info["error"]
        dirs.add(run_dir)
        resumed[sig] = _start(tmp_path, f"ckpt_path={last}")
    assert len(dirs) == 3  # started in the same second, yet one folder each

    full_info = _run_info(full_dir)
    for proc in resumed.values():
        code, text, run_dir = _finish(proc)
        assert code == 0, text[-3000:]
        dirs.add(run_dir)
        _assert_same_weights(full_dir / "checkpoints/last.ckpt", run_dir / "checkpoints/last.ckpt")
        metrics = _run_info(run_dir)["metrics"]
        for key in ("train/loss", "train/acc", "val/acc", "test/acc"):
            assert metrics[key] == pytest.approx(full_info["metrics"][key], abs=1e-6), key
    assert len(dirs) == 5


class SignalAtStep(Callback):
    """Test-only: send this process ``signum`` at the end of optimizer step ``step``."""

    def __init__(self, step: int, signum: int) -> None:
        self.step = step
        self.signum = signum

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        """Signal once, at ``step`` (a real signal: the installed handler receives it)."""
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def test_signal_in_process_saves_the_step_and_resumes_exactly(
    cfg_train: DictConfig, tmp_path: Path
) -> None:
    """SIGINT, then SIGTERM, at step 7 of 12: saved at step 8, resumed: same weights, same
    logged train metrics of the resumed epoch, as the uninterrupted run."""
    one_epoch = {"trainer.max_epochs": 1}
    full = _run(cfg_train, tmp_path / "full", **one_epoch)
    for signum in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / signal.Signals(signum).name
        with pytest.raises(RunInterrupted) as caught:
            signaller = {"_target_": f"{__name__}.SignalAtStep", "step": 7, "signum": int(signum)}
            _run(cfg_train, out / "a", **{"callbacks.signaller": signaller}, **one_epoch)
        last = out / "a" / "checkpoints" / "last.ckpt"
        assert caught.value.code == 128 + signum and caught.value.ckpt_path == last
        assert signal.getsignal(signum) is not InterruptCheckpoint._handle  # handlers put back
        info = yaml.safe_load((out / "a" / "run_info.yaml").read_text())
        assert info["status"] == "interrupted" and f"ckpt_path={last}" in info["error"]
        ckpt = torch.load(last, weights_only=True)
        assert (ckpt["epoch"], ckpt["global_step"]) == (0, 8)
        assert ckpt["train_metric_states"]["losses.train_total"]["update_count"] == 8
        resumed = _run(cfg_train, out / "b", ckpt_path=str(last), **one_epoch)
        _assert_same_weights(
            tmp_path / "full/checkpoints/last.ckpt", out / "b/checkpoints/last.ckpt"
        )
        for key in ("train/loss", "train/acc", "val/acc", "test/acc"):
            assert resumed[key] == pytest.approx(full[key], abs=1e-6), key


def test_run_folders_differ_when_composed_in_the_same_second() -> None:
    """The run and sweep folders carry a random suffix after the second-resolution time."""
    folders = []
    for _ in range(2):
        cfg = compose_config("train.yaml")
        folders.append((cfg.hydra.run.dir, cfg.hydra.sweep.dir))
        assert cfg.hydra.run.dir == cfg.hydra.run.dir  # one value per config, however often read
    (run_a, sweep_a), (run_b, sweep_b) = folders
    assert run_a != run_b and sweep_a != sweep_b
    assert re.fullmatch(r".*/runs/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}", run_a), run_a
    assert re.fullmatch(r".*/multiruns/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}", sweep_a)


@pytest.mark.parametrize("config_name", ["eval.yaml", "predict.yaml", "export.yaml"])
def test_every_entry_point_gets_a_unique_folder(config_name: str) -> None:
    """eval, predict and export share the hydra settings, so their folders are unique too."""
    dirs = {compose_config(config_name).hydra.run.dir for _ in range(2)}
    assert len(dirs) == 2 and all(re.search(r"_[0-9a-f]{6}$", d) for d in dirs), dirs


def test_multirun_jobs_share_one_sweep_folder() -> None:
    """Hydra copies the resolver cache into every job's config: one sweep folder per sweep."""
    cfg = compose_config("train.yaml")
    first = cfg.hydra.sweep.dir  # the launcher creates the sweep folder before any job
    job = OmegaConf.create(OmegaConf.to_container(cfg))  # a fresh config, as for a sweep job
    OmegaConf.copy_cache(from_config=cfg, to_config=job)
    assert job.hydra.sweep.dir == first


def test_run_interrupted_names_the_checkpoint_and_exit_code() -> None:
    """The exit code follows the shell convention; the message says how to resume."""
    err = RunInterrupted(signal.SIGTERM, "/r/checkpoints/last.ckpt")
    assert err.code == 143 and RunInterrupted(signal.SIGINT, "x").code == 130
    assert "SIGTERM" in str(err) and "ckpt_path=/r/checkpoints/last.ckpt" in str(err)
