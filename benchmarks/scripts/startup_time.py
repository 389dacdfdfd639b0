"""How long the entry point takes to answer without training: help, config, a typo.

Each command runs ``--repeats`` times, commands alternating, and ``python -c "import hydra"`` is
measured beside them as the floor (Hydra itself must load). Run it alone::

    python benchmarks/scripts/startup_time.py --out benchmarks/results/startup.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.lib.configs import ROOT  # noqa: E402
from benchmarks.lib.report import write_json  # noqa: E402

#: name -> (arguments after ``python``, the exit status it must end with)
COMMANDS: dict[str, tuple[list[str], int]] = {
    "python -c 'import hydra'": (["-c", "import hydra"], 0),
    "python src/train.py --help": (["src/train.py", "--help"], 0),
    "python src/train.py --cfg job": (["src/train.py", "--cfg", "job"], 0),
    "python src/train.py --info": (["src/train.py", "--info"], 0),
    "python src/train.py model=nope (config typo)": (["src/train.py", "model=nope"], 1),
    "python src/eval.py --help": (["src/eval.py", "--help"], 0),
}


def seconds(args: list[str], status: int) -> float:
    """Wall seconds of ``python <args>``; raises unless it exits with ``status``."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != status:
        raise RuntimeError(f"python {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return time.perf_counter() - start


def main() -> None:
    """Time every command round by round; print and optionally save the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the report here as JSON")
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, (command, status) in COMMANDS.items():
            runs[name].append(round(seconds(command, status), 2))
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "what": "wall seconds, commands alternating; the median of each",
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
        "runs": runs,
        "median_s": {name: round(statistics.median(times), 2) for name, times in runs.items()},
    }
    print(json.dumps(report["median_s"], indent=1))
    if args.out:
        write_json(args.out, report, indent=1)


if __name__ == "__main__":
    main()
