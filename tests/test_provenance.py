"""run_info.yaml provenance, secret masking and same-seed reproducibility."""

import gc
import logging
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from src.train import train
from src.utils import extras
from src.utils.provenance import git_state, package_versions
from src.utils.secrets import MASK, collect_secrets, is_secret_name, redact, redact_text
from src.utils.utils import freeze_imported_objects, task_wrapper
from tests.conftest import ROOT

TINY = {
    "data.train_val_test_split": [256, 64, 64],
    "data.batch_size": 32,
    "trainer.max_epochs": 1,
}
API_KEY = "sk-test-0123456789abcdef"
PASSWORD = "hunter2-correct-horse"


def _set(cfg: DictConfig, values: dict) -> DictConfig:
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


# --------------------------------------------------------------------------- run_info
def test_run_info_records_provenance(cfg_train: DictConfig, tmp_path: Path) -> None:
    _set(cfg_train, {**TINY, "seed": 3})
    HydraConfig().set_config(cfg_train)
    metrics, _ = train(cfg_train)

    info = yaml.safe_load((tmp_path / "run_info.yaml").read_text())
    assert info["status"] == "finished" and info["duration_s"] > 0
    assert info["metrics"]["test/acc"] == pytest.approx(float(metrics["test/acc"]))
    assert info["command"].split()[0] == sys.executable and sys.argv[0] in info["command"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert info["git"]["available"] and info["git"]["commit"] == head.stdout.strip()
    assert isinstance(info["git"]["dirty"], bool)
    for name in (
        "python",
        "torch",
        "torchvision",
        "lightning",
        "hydra-core",
        "timm",
        "torchmetrics",
    ):
        assert info["packages"][name], name
    assert info["packages"]["lightning"] == version("lightning")
    # The config is resolved: interpolations are replaced by their values.
    assert info["config"]["paths"]["output_dir"] == str(tmp_path)
    assert info["config"]["callbacks"]["model_checkpoint"]["dirpath"] == f"{tmp_path}/checkpoints"
    assert info["config"]["data"]["train_val_test_split"] == [256, 64, 64]
    assert info["seed"] == 3 and info["hydra_choices"]["data"] == "mnist"


def test_run_info_records_failures(cfg_train: DictConfig, tmp_path: Path) -> None:
    @task_wrapper
    def broken(cfg: DictConfig) -> tuple[dict, dict]:
        raise RuntimeError("out of patience")

    with pytest.raises(RuntimeError):
        broken(cfg_train)
    info = yaml.safe_load((tmp_path / "run_info.yaml").read_text())
    assert info["status"] == "failed"
    assert info["error"] == "RuntimeError: out of patience"


def test_run_info_can_be_turned_off(cfg_train: DictConfig, tmp_path: Path) -> None:
    @task_wrapper
    def task(cfg: DictConfig) -> tuple[dict, dict]:
        return {}, {}

    with open_dict(cfg_train):
        cfg_train.extras.run_info = False
    task(cfg_train)
    assert not (tmp_path / "run_info.yaml").exists()


def test_task_wrapper_does_not_import_wandb_to_close_no_run(
    cfg_train: DictConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Importing wandb costs ~0.8 s; a run without the wandb logger must not pay it at exit."""
    monkeypatch.delitem(sys.modules, "wandb", raising=False)

    @task_wrapper
    def task(cfg: DictConfig) -> tuple[dict, dict]:
        return {}, {}

    task(cfg_train)
    assert "wandb" not in sys.modules


def test_freeze_imported_objects_exempts_them_from_collection() -> None:
    before = gc.get_freeze_count()
    try:
        freeze_imported_objects()
        assert gc.get_freeze_count() > before + 10_000  # the imported libraries' objects
    finally:
        gc.unfreeze()


def test_git_state_outside_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = git_state(tmp_path)
    assert state["available"] is False and "not a git repository" in state["reason"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    assert git_state(ROOT) == {"available": False, "reason": "git is not installed"}


def test_package_versions_name_missing_packages() -> None:
    versions = package_versions(("torch", "surely-not-installed-pkg"))
    assert versions["torch"] and versions["python"].count(".") == 2
    assert versions["surely-not-installed-pkg"] is None


# ------------------------------------------------------------------------------ secrets
@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("api_key", True),
        ("WANDB_API_KEY", True),
        ("NEPTUNE_API_TOKEN", True),
        ("auth_token", True),
        ("client_secret", True),
        ("db_password", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("aws_secret_access_key", True),
        ("token_dim", False),
        ("num_tokens", False),
        ("tokenizer", False),
        ("batch_size", False),
        ("key", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_redact_masks_keys_values_and_substrings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", API_KEY)
    monkeypatch.setenv("SHORT_TOKEN", "1")  # too short to mask as a substring
    cfg = OmegaConf.create(
        {
            "logger": {"api_key": "${oc.env:MY_SERVICE_TOKEN}", "project": "p"},
            "url": "https://user:${oc.env:MY_SERVICE_TOKEN}@host/x",
            "tags": ["a", "${oc.env:MY_SERVICE_TOKEN}"],
            "model": {"class_token": True, "token_dim": 1, "lr": 0.1},
            "later": "${oc.env:LHTE_SURELY_UNSET}",  # cannot resolve: kept as text
        }
    )
    out = redact(cfg, collect_secrets(cfg))
    assert out["logger"] == {"api_key": MASK, "project": "p"}
    assert out["url"] == f"https://user:{MASK}@host/x"
    assert out["tags"] == ["a", MASK]
    assert out["model"] == {"class_token": True, "token_dim": 1, "lr": 0.1}
    assert out["later"] == "${oc.env:LHTE_SURELY_UNSET}"
    assert redact_text("x=1 y=1", collect_secrets()) == "x=1 y=1"
    # A literal under a secret key is masked wherever else it appears.
    literal = OmegaConf.create(
        {"auth_token": "literal-secret-42", "note": "uses literal-secret-42"}
    )
    assert redact(literal) == {"auth_token": MASK, "note": f"uses {MASK}"}


def _files_containing(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {n}" for n in needles if n.encode() in data]
    return hits


def test_secrets_never_appear_in_tree_logs_or_files(
    cfg_train: DictConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Secrets from the environment (as `.env` provides them) go through every output path."""
    monkeypatch.setenv("WANDB_API_KEY", API_KEY)
    monkeypatch.setenv("DB_PASSWORD", PASSWORD)
    _set(cfg_train, TINY)
    with open_dict(cfg_train):
        cfg_train.extras.api_key = "${oc.env:WANDB_API_KEY}"  # logged with the extras
        cfg_train.extras.print_config = True
        cfg_train.extras.enforce_tags = True  # writes tags.log
        cfg_train.tags = ["db-${oc.env:DB_PASSWORD}"]  # a non-secret key holding a secret
        cfg_train.logger = OmegaConf.create(
            {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(tmp_path)}}
        )
    HydraConfig().set_config(cfg_train)
    caplog.set_level(logging.DEBUG)
    extras(cfg_train)
    train(cfg_train)

    captured = capsys.readouterr()
    for text in (captured.out, captured.err, caplog.text):
        assert API_KEY not in text and PASSWORD not in text
    assert not _files_containing(tmp_path, [API_KEY, PASSWORD])
    # The masked values did go through each path (so this test can fail).
    (hparams,) = tmp_path.rglob("hparams.yaml")
    for path in (tmp_path / "config_tree.log", tmp_path / "run_info.yaml", hparams):
        assert MASK in path.read_text(), path
    assert "db-" in (tmp_path / "tags.log").read_text()


def test_cli_run_masks_secrets_in_hydra_files(tmp_path: Path) -> None:
    """Through `python src/train.py`: .hydra/config.yaml keeps the interpolation, and a
    secret typed on the command line is masked in Hydra's files and run_info.yaml. Lightning's
    messages are printed once (not also by its own console handler) and reach train.log."""
    env = {"WANDB_API_KEY": API_KEY, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    command = [
        sys.executable,
        "src/train.py",
        f"hydra.run.dir={tmp_path}",
        "trainer=cpu",
        "+trainer.fast_dev_run=true",
        "data.train_val_test_split=[256,64,64]",
        "extras.enforce_tags=false",
        "seed=5",
        "~callbacks.rich_progress_bar",
        "+extras.api_key=${oc.env:WANDB_API_KEY}",
        f"+extras.auth_token={PASSWORD}",
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert API_KEY not in result.stdout + result.stderr
    assert (result.stdout + result.stderr).count("Seed set to 5") == 1
    assert "Seed set to 5" in (tmp_path / "train.log").read_text()
    assert not _files_containing(tmp_path, [API_KEY, PASSWORD])
    saved = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert OmegaConf.to_container(saved.extras)["api_key"] == "${oc.env:WANDB_API_KEY}"
    info = yaml.safe_load((tmp_path / "run_info.yaml").read_text())
    assert f"+extras.auth_token={MASK}" in info["command"]
    assert info["config"]["extras"]["api_key"] == MASK


# ----------------------------------------------------------------------- reproducibility
def test_same_seed_same_metrics_and_weights(cfg_train: DictConfig, tmp_path: Path) -> None:
    """Two CPU runs with one seed (augmentation on, deterministic) end identical."""
    results = []
    for run in ("one", "two"):
        cfg = _set(cfg_train.copy(), {**TINY, "seed": 11, "trainer.deterministic": True})
        _set(cfg, {"data.augment": {"crop_padding": 2, "degrees": 10}})
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / run)
        HydraConfig().set_config(cfg)
        metrics, _ = train(cfg)
        weights = torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)
        results.append(({k: float(v) for k, v in metrics.items()}, weights["state_dict"]))
    (metrics_1, weights_1), (metrics_2, weights_2) = results
    assert metrics_1 == metrics_2
    for name, value in weights_1.items():
        assert torch.equal(value, weights_2[name]), name
