"""The CIFAR benchmark suite script: planning, commands, failures, resuming, report and plots."""

import json
import sys
from pathlib import Path

import pytest

from benchmarks.scripts import benchmark_cifar as suite
from src.utils.experiment_names import experiment_aliases
from tests.helpers.cifar_files import write_cifar10, write_cifar100

PLOTS = ("test_acc_vs_params.png", "test_acc_vs_time.png", "val_curves.png")


def plan(*argv: str) -> tuple[list[suite.Run], list[str]]:
    return suite.plan(suite.parse_args(list(argv)))


def test_default_matrix_is_every_existing_experiment() -> None:
    runs, notes = plan()
    assert [r.experiment for r in runs] == list(suite.EXPERIMENTS.values())
    assert len(runs) + len(notes) == 3 * 4  # the other combinations are listed as not run
    for run in runs:
        assert (Path(suite.ROOT) / "configs" / "experiment" / f"{run.experiment}.yaml").is_file()


def test_matrix_options_and_overrides() -> None:
    runs, _ = plan(
        "--quick",
        "--datasets", "cifar10", "cifar100",
        "--archs", "cnn",
        "-D", "cifar10:data=cifar10_jpeg",
        "--", "trainer=cpu", "data.batch_size=64",
    )  # fmt: skip
    assert [(r.dataset, r.architecture) for r in runs] == [("cifar10", "cnn"), ("cifar100", "cnn")]
    assert runs[0].overrides == [
        "trainer.max_epochs=5",
        "trainer=cpu",
        "data.batch_size=64",
        "data=cifar10_jpeg",  # dataset-specific last: it wins
    ]
    assert runs[1].overrides == ["trainer.max_epochs=5", "trainer=cpu", "data.batch_size=64"]
    assert plan("--epochs", "2", "--experiments", "cifar100_cnn")[0][0].overrides == [
        "trainer.max_epochs=2"
    ]
    jpeg = plan(
        "--cifar10-jpeg", "/data/c10.tgz", "--archs", "cnn", "-D", "cifar10:data.image_size=32"
    )
    assert jpeg[0][0].overrides == [
        "data=cifar10_jpeg",
        "data.archive=/data/c10.tgz",
        "data.image_size=32",
    ]
    assert jpeg[0][1].overrides == []  # cifar100 runs are untouched
    everything = [r.experiment for r in plan("--experiments", "all")[0]]
    assert "cifar100_cnn" in everything and len(everything) >= 8
    assert not set(everything) & set(experiment_aliases())  # an old name would run a recipe twice
    with pytest.raises(SystemExit):
        plan("-D", "mnist:data=mnist")


def test_experiment_names_are_described() -> None:
    assert suite.describe("cifar100_coarse_cnn") == ("cifar100_coarse", "cnn")
    assert suite.describe("cifar100_cnn") == ("cifar100", "cnn")
    assert suite.describe("cifar10_vit_benchmark") == ("cifar10", "vit")


def test_command_line(tmp_path: Path) -> None:
    run = suite.Run("cifar10_cnn_benchmark", "cifar10", "cnn", ["trainer.max_epochs=5"])
    cmd = suite.command(run, tmp_path / "my out")
    assert cmd[1:4] == ["src/train.py", "experiment=cifar10_cnn_benchmark", "logger=csv"]
    assert f"hydra.run.dir='{tmp_path}/my out/runs/cifar10_cnn_benchmark'" in cmd
    assert cmd[-1] == "trainer.max_epochs=5"
    assert any(c.endswith("benchmark_cifar.BenchmarkRecorder") for c in cmd)
    run.overrides.append("logger=tensorboard")
    assert "logger=csv" not in suite.command(run, tmp_path)


def fake_command(run: suite.Run, out: Path) -> list[str]:
    """A stand-in for src/train.py: writes a plausible record, or fails for 'bad' runs."""
    record = {
        "parameters": 1000 * (len(run.experiment) ** 2),
        "device": "cpu (2 threads)",
        "max_epochs": 2,
        "epochs": [
            {"epoch": 0, "val_acc": 0.5, "train_time_s": 2.0, "train_images": 100},
            {"epoch": 1, "val_acc": 0.6, "train_time_s": 2.0, "train_images": 100},
        ],
        "test_acc": 0.55,
    }
    path = run.run_dir(out) / "record.json"
    fail = "bad" in " ".join(run.overrides)
    code = (
        "import sys; print('Traceback: something broke'); sys.exit(3)"
        if fail
        else f"import json, pathlib; pathlib.Path({str(path)!r}).write_text({json.dumps(record)!r})"
    )
    return [sys.executable, "-c", code]


def test_suite_survives_a_failure_and_resumes(tmp_path: Path, monkeypatch) -> None:
    """One run fails, the other finishes; the report covers both; a rerun skips the finished run."""
    monkeypatch.setattr(suite, "command", fake_command)
    argv = ["--experiments", "cifar10_cnn_benchmark", "cifar100_coarse_cnn", "--out", str(tmp_path)]
    assert suite.main([*argv, "-D", "cifar100_coarse:bad"]) == 1

    results = json.loads((tmp_path / "results.json").read_text())
    by_name = {r["experiment"]: r for r in results}
    ok, bad = by_name["cifar10_cnn_benchmark"], by_name["cifar100_coarse_cnn"]
    assert ok["status"] == "ok" and ok["test_acc"] == 0.55 and ok["best_val_acc"] == 0.6
    assert ok["epochs"] == 2 and ok["train_time_s"] == 4.0 and ok["images_per_s"] == 50.0
    assert ok["parameters"] and ok["device"] and ok["git_commit"] and ok["wall_time_s"] >= 0
    assert bad["status"] == "failed" and "exit code 3" in bad["error"]
    assert "something broke" in bad["error"]
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    for column in ("experiment", "dataset", "architecture", "parameters", "epochs"):
        assert column in header
    for column in ("best_val_acc", "test_acc", "wall_time_s", "images_per_s", "device"):
        assert column in header
    assert "git_commit" in header
    report = (tmp_path / "report.md").read_text()
    assert "| cifar10_cnn_benchmark | cifar10 | cnn |" in report and "55.00%" in report
    assert "## Failures" in report and "something broke" in report
    for plot in PLOTS:
        assert (tmp_path / plot).stat().st_size > 1000 and f"]({plot})" in report

    ran = []
    monkeypatch.setattr(suite, "execute", _recording_execute(ran))
    assert suite.main(argv) == 0  # the failed run is retried (without the bad override)
    assert ran == ["cifar100_coarse_cnn"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["status"] for r in results] == ["ok", "ok"]


def _recording_execute(ran: list[str]):
    """``execute`` that records which runs really ran, then runs them with the fake command."""
    real = suite.execute

    def execute(run, *args, **kwargs):
        ran.append(run.experiment)
        return real(run, *args, **kwargs)

    return execute


def test_report_without_finished_runs(tmp_path: Path) -> None:
    run = suite.Run("cifar10_vit_benchmark", "cifar10", "vit")
    result = suite.summarize(run, None, status="failed", error="exit code 1", wall_time_s=1.0)
    suite.write_tables([result], tmp_path)
    plots = suite.write_plots([result], tmp_path)
    suite.write_report([result], tmp_path, plots, [], ["cifar100 x vit: no experiment config"])
    report = (tmp_path / "report.md").read_text()
    assert "0 finished, 1 failed" in report and "## Not run" in report
    assert all((tmp_path / p).is_file() for p in PLOTS)


def test_dry_run_runs_nothing(tmp_path: Path, capsys) -> None:
    assert suite.main(["--dry-run", "--quick", "--out", str(tmp_path / "out")]) == 0
    assert "src/train.py experiment=cifar10_cnn_benchmark" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_real_runs_on_small_files(tmp_path: Path) -> None:
    """End to end with src/train.py on tiny official-format files: two trainings, one failure."""
    data = tmp_path / "data"
    write_cifar10(data, n_train=40, n_test=16)
    write_cifar100(data, n_train=40, n_test=16)
    out = tmp_path / "out"
    argv = [
        "--experiments", "cifar10_cnn_benchmark", "cifar100_coarse_cnn", "cifar100_cnn_benchmark",
        "--epochs", "2", "--out", str(out),
        "-D", "cifar100:data.train_val_test_split=[999999,1,1]",  # fails: more than the files hold
        "--", f"data.data_dir={data}", "data.train_val_test_split=[32,8,16]", "data.batch_size=16",
        "trainer.accelerator=cpu",
    ]  # fmt: skip
    assert suite.main(argv) == 1
    results = {r["experiment"]: r for r in json.loads((out / "results.json").read_text())}
    cnn = results["cifar10_cnn_benchmark"]
    assert cnn["status"] == "ok" and cnn["epochs"] == 2 and len(cnn["val_acc_curve"]) == 2
    assert 0 <= cnn["test_acc"] <= 1 and cnn["parameters"] > 3_000_000
    assert cnn["images_per_s"] > 0 and cnn["device"].startswith("cpu")
    assert results["cifar100_coarse_cnn"]["status"] == "ok"
    failed = results["cifar100_cnn_benchmark"]
    assert failed["status"] == "failed" and "more than the dataset has" in failed["error"]
    assert (out / "runs" / "cifar10_cnn_benchmark" / "csv").is_dir()  # logger=csv
    assert all((out / p).is_file() for p in PLOTS)
    # Rerun: the two finished runs are skipped, only the failed one runs again.
    before = (out / "runs" / "cifar10_cnn_benchmark" / "result.json").read_text()
    assert suite.main(argv) == 1
    assert (out / "runs" / "cifar10_cnn_benchmark" / "result.json").read_text() == before
