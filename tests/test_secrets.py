"""Secret names, URL passwords, and a real Optuna multirun that must leave no secret on disk."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.utils.secrets import (
    MASK,
    collect_secrets,
    is_secret_name,
    mask_url_passwords,
    redact,
    redact_log_records,
    redact_text,
)
from tests.conftest import ROOT
from tests.test_provenance import _files_containing
from tests.test_sweeps import SMALL, optuna_run

DB_PASSWORD = "pg-Pa55word-xyz"
DB_PASS = "env-db-pass-0042"
GITHUB_PAT = "ghp_fake0123456789abcdef"
URL_PASSWORD = "url-secret-7777"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("DB_PASS", True),
        ("smtp_passwd", True),
        ("db_password", True),
        ("dbPassword", True),
        ("DB_PWD", True),
        ("GITHUB_PAT", True),
        ("HF_TOKEN", True),
        ("client_secret", True),
        ("aws_secret_access_key", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("API_KEY", True),
        ("apiKey", True),
        ("STRIPE_KEY", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("ssh.passphrase", True),
        ("key_dim", False),
        ("num_keys", False),
        ("key", False),
        ("token_dim", False),
        ("num_tokens", False),
        ("patch_size", False),
        ("pass_through", False),
        ("passes", False),
        ("PWD", False),  # the working directory
        ("OLDPWD", False),
        ("PATH", False),
        ("DATABASE_URL", False),  # only its password is masked, see below
    ],
)
def test_secret_name_table(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:pw@host/db", f"postgresql://user:{MASK}@host/db"),
        ("mysql+pymysql://u:p%40ss@h:3306/x", f"mysql+pymysql://u:{MASK}@h:3306/x"),
        ("redis://:hunter22@localhost:6379/0", f"redis://:{MASK}@localhost:6379/0"),
        ("https://bot:tok@git.example.org/r.git", f"https://bot:{MASK}@git.example.org/r.git"),
        ("sqlite:///tmp/a:b@c.db", "sqlite:///tmp/a:b@c.db"),  # no password there
        ("https://example.org/x?a=1", "https://example.org/x?a=1"),
    ],
)
def test_url_password_is_masked_and_the_rest_kept(url: str, masked: str) -> None:
    assert mask_url_passwords(f"storage={url} end") == f"storage={masked} end"


def test_database_url_password_is_masked_wherever_it_appears() -> None:
    env = {"DATABASE_URL": f"postgresql://me:{URL_PASSWORD}@db/x", "HOME": "/home/me"}
    secrets = collect_secrets(environ=env)
    assert secrets == {URL_PASSWORD}
    assert redact_text(f"connecting with {URL_PASSWORD}", secrets) == f"connecting with {MASK}"
    assert redact({"db": {"url": env["DATABASE_URL"]}}, secrets) == {
        "db": {"url": f"postgresql://me:{MASK}@db/x"}
    }


SWEEP = """
import runpy, sys
from pathlib import Path
import optuna
root, record, real_db = sys.argv[1:4]
real_init = optuna.storages.RDBStorage.__init__
def init(self, url, *args, **kwargs):  # what Optuna is asked to connect to, on SQLite
    with open(record, "a") as f:
        f.write(url + "\\n")
    real_init(self, real_db, *args, **kwargs)
optuna.storages.RDBStorage.__init__ = init
sys.argv = [str(Path(root) / "src" / "train.py"), *sys.argv[4:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_optuna_multirun_leaves_no_password_in_the_log_folder(tmp_path: Path) -> None:
    """Two trials with a PostgreSQL-style storage URL and secret env vars: no file under the
    sweep folder holds a secret, while the sweeper and the trials get the real URL."""
    storage = f"postgresql://optuna:{DB_PASSWORD}@dbhost/optuna"
    record, script = tmp_path / "connected.txt", tmp_path / "sweep.py"
    script.write_text(SWEEP)
    overrides = optuna_run(tmp_path, "search", "hydra.sweeper.n_trials=2")
    overrides = [o for o in overrides if not o.startswith("hydra.sweeper.storage=")]
    command = [
        sys.executable, str(script), str(ROOT), str(record), f"sqlite:///{tmp_path / 'study.db'}",
        "-m", *SMALL, *overrides, f"hydra.sweeper.storage={storage}",
        "data.train_val_test_split=[256,64,64]", "data.batch_size=32", "trainer.max_epochs=1",
        "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
    ]  # fmt: skip
    env = {
        **os.environ,
        "DB_PASS": DB_PASS,
        "GITHUB_PAT": GITHUB_PAT,
        "DATABASE_URL": f"mysql+pymysql://app:{URL_PASSWORD}@db/app",
        "HYDRA_FULL_ERROR": "1",
    }
    proc = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    secrets = [DB_PASSWORD, DB_PASS, GITHUB_PAT, URL_PASSWORD]
    sweep_dir = tmp_path / "search"
    assert not _files_containing(sweep_dir, secrets)
    assert not [s for s in secrets if s in output]
    # The real URL reached Optuna, in the sweeper and in the trials' pruning callback.
    assert set(record.read_text().split()) == {storage}
    # The files were written and keep the URL readable (so this test can fail).
    trials = sorted(p.parent.parent for p in sweep_dir.glob("*/.hydra/hydra.yaml"))
    assert len(trials) == 2
    masked = f"postgresql://optuna:{MASK}@dbhost/optuna"
    assert masked in (sweep_dir / "multirun.yaml").read_text()
    for trial in trials:
        assert masked in (trial / ".hydra" / "hydra.yaml").read_text()
        assert masked in (trial / "run_info.yaml").read_text()
        assert list(trial.glob("*.log")), f"no log file in {trial}"


def test_log_records_are_masked_for_every_handler(caplog: pytest.LogCaptureFixture) -> None:
    """Masked when the record is made, so Hydra's rebuilt handlers (`<task>.log`) see no secret."""
    redact_log_records({DB_PASS})
    log = logging.getLogger("lhte.test_secrets")
    with caplog.at_level(logging.INFO):
        log.info("storage %s, pass %s", f"postgresql://u:{URL_PASSWORD}@h/db", DB_PASS)
    assert caplog.messages == [f"storage postgresql://u:{MASK}@h/db, pass {MASK}"]


def test_hydra_files_are_masked_without_run_info(cfg_train, tmp_path: Path) -> None:
    """``extras.run_info=false`` skips provenance, not masking: Hydra's copy of the command line
    is scrubbed all the same."""
    from omegaconf import open_dict

    from src.utils.utils import task_wrapper

    url = "postgresql://optuna:hunter2-secret@db.example/study"
    hydra_file = tmp_path / ".hydra" / "hydra.yaml"
    hydra_file.parent.mkdir()
    hydra_file.write_text(f"sweeper:\n  storage: {url}\n")
    with open_dict(cfg_train):
        cfg_train.extras.run_info = False
        cfg_train.storage = url
    task_wrapper(lambda cfg: ({}, {}))(cfg_train)
    assert "hunter2-secret" not in hydra_file.read_text()
    assert "optuna:" in hydra_file.read_text() and not (tmp_path / "run_info.yaml").exists()
