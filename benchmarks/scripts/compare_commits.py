"""Wall time of the same command at several commits, runs alternating, on one machine.

Each commit is checked out into a temporary git worktree (sharing ``data/`` with this checkout),
then the command runs once per commit per round, so a change in machine load hits every commit
alike. Use it to show that a change did not make training slower::

    python benchmarks/scripts/compare_commits.py 9be3191~1 HEAD --rounds 5 \\
        --out benchmarks/results/commit_speed.json -- experiment=mnist_speedrun

Everything after ``--`` is passed to ``python src/train.py``. Run it alone on the machine.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.lib.configs import ROOT  # noqa: E402
from benchmarks.lib.report import train_command, write_json  # noqa: E402


def git(*args: str) -> str:
    """Run git in this checkout; its stripped output."""
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def checkout(commit: str, folder: Path) -> Path:
    """A detached worktree of ``commit`` in ``folder``, with this checkout's ``data/`` linked."""
    git("worktree", "add", "--detach", "-f", str(folder), commit)
    (folder / "data").symlink_to(ROOT / "data", target_is_directory=True)
    return folder


def timed_run(folder: Path, overrides: list[str], run_dir: Path) -> float:
    """Seconds ``python src/train.py <overrides>`` takes in ``folder``; raises if it fails."""
    command = train_command(*overrides, f"hydra.run.dir={run_dir}")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{folder}: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    """Parse the command line, time every commit round by round, print and save the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commits", nargs="+", help="commits to compare (any git revision)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per commit, alternating")
    parser.add_argument("--out", type=Path, help="write the report here as JSON")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, overrides = parser.parse_args(argv[:cut]), argv[cut + 1 :]  # after --: train.py's
    shas = {c: git("rev-parse", "--short", c) for c in args.commits}
    times: dict[str, list[float]] = {c: [] for c in args.commits}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folders = {c: checkout(shas[c], Path(tmp) / shas[c]) for c in args.commits}
        try:
            for r in range(args.rounds):
                for commit, folder in folders.items():
                    seconds = timed_run(folder, overrides, Path(tmp) / f"run_{shas[commit]}_{r}")
                    times[commit].append(round(seconds, 2))
                    print(f"round {r}: {commit} ({shas[commit]}) {seconds:.2f} s", flush=True)
        finally:
            for folder in folders.values():
                git("worktree", "remove", "--force", str(folder))
    first = args.commits[0]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python src/train.py", *overrides]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
        "commits": {
            c: {
                "sha": shas[c],
                "wall_s": times[c],
                "median_s": round(statistics.median(times[c]), 2),
                "ratio_to_first": round(
                    statistics.median(times[c]) / statistics.median(times[first]), 3
                ),
            }
            for c in args.commits
        },
    }
    print(json.dumps(report["commits"], indent=1))
    if args.out:
        write_json(args.out, report, indent=1)


if __name__ == "__main__":
    main()
