"""DDP trials inside a local Hydra multirun (``-m``, Optuna searches): each trial starts its ranks.

Lightning starts the other DDP ranks by re-running the command line, and inside ``-m`` that
line is the whole sweep. Here the trial's job (rank 0, in the sweep process) starts ranks
1..N-1 itself as ``python src/train.py <this job's overrides>`` in the job's own folder, and for
the duration of the job sets the variables Lightning reads for processes started by someone
else (``LOCAL_RANK``, ``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``). Each
trial thus gets its own folder, metrics synced across its ranks, and its result returns to the
sweeper from rank 0. SLURM and torchrun start ranks themselves and are left alone.
"""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from src.utils import pylogger

log = pylogger.RankedLogger(__name__, rank_zero_only=True)

#: Set when something other than Lightning started this process's ranks (torchrun, SLURM).
EXTERNAL_LAUNCH_VARS = ("LOCAL_RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID")
#: Seconds the other ranks get to finish after rank 0 is done.
RANK_EXIT_TIMEOUT = 120


def devices_of(trainer_cfg: Mapping) -> int:
    """Processes per node a trainer config asks for (``devices`` may be a list of ids)."""
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, int):
        return devices
    if isinstance(devices, str):
        return int(devices) if devices.strip().lstrip("-").isdigit() else 1
    return len(devices) if devices is not None else 1


def needs_trial_ranks(trainer_cfg: Mapping, multirun: bool, launcher: str = "") -> bool:
    """Whether this multirun job must start its own DDP ranks (see the module docstring)."""
    strategy = str(trainer_cfg.get("strategy", "auto"))
    external = any(v in os.environ for v in EXTERNAL_LAUNCH_VARS) or "submitit" in launcher
    return multirun and strategy.startswith("ddp") and devices_of(trainer_cfg) > 1 and not external


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def trial_ranks(trainer_cfg: Mapping, script: str | Path) -> Iterator[None]:
    """Start ranks 1..N-1 of this job's DDP run; make this process rank 0 until the job ends.

    :param trainer_cfg: The job's ``trainer`` config (``devices``, ``num_nodes``, ``strategy``).
    :param script: The entry point the ranks run (``src/train.py``).
    :raises ValueError: For several nodes, which only SLURM/torchrun can start.
    :raises RuntimeError: When a rank fails, naming its exit code.
    """
    import torch.distributed as dist
    from hydra.core.hydra_config import HydraConfig

    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    if nodes > 1:
        raise ValueError(
            f"trainer.num_nodes={nodes} inside a local multirun: one machine cannot start the "
            "other nodes. Use hydra/launcher=submitit_slurm (SLURM starts every rank)."
        )
    hydra_cfg = HydraConfig.get()
    devices = devices_of(trainer_cfg)
    shared = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(devices),
        "NODE_RANK": "0",
    }
    output_dir = hydra_cfg.runtime.output_dir
    command = [
        sys.executable,
        str(script),
        *hydra_cfg.overrides.task,
        f'hydra.run.dir="{output_dir}"',
        "hydra.output_subdir=null",  # rank 0 writes the job's .hydra/
        "hydra.mode=RUN",  # search configs may set MULTIRUN: a rank runs this one job only
    ]
    log.info(f"DDP trial: starting ranks 1-{devices - 1} in {output_dir}")
    ranks = [
        subprocess.Popen(
            [*command, f"hydra.job.name={hydra_cfg.job.name}_rank{rank}"],
            env={**os.environ, **shared, "LOCAL_RANK": str(rank)},
        )
        for rank in range(1, devices)
    ]
    saved = {k: os.environ.get(k) for k in [*shared, "LOCAL_RANK"]}
    os.environ.update(shared, LOCAL_RANK="0")
    failed = True
    try:
        yield
        failed = False
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # the next trial builds its own group
        codes = _wait(ranks, timeout=5 if failed else RANK_EXIT_TIMEOUT)
    bad = {rank: code for rank, code in enumerate(codes, start=1) if code != 0}
    if bad:
        raise RuntimeError(
            f"DDP trial in {output_dir}: rank(s) {list(bad)} exited with {list(bad.values())}; "
            "their output is above."
        )


def _wait(ranks: list[subprocess.Popen], timeout: float) -> list[int]:
    """Exit codes of the rank processes; those still running after ``timeout`` are stopped."""
    codes = []
    for proc in ranks:
        try:
            codes.append(proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                codes.append(proc.wait(timeout=10))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
    return codes
