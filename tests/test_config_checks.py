"""Type and range checks of common keys: one message naming the key, before any data is read."""

from pathlib import Path

import pytest

from src.utils.config_checks import ConfigValueError, check_config
from src.utils.experiment_names import canonical_experiments
from tests.conftest import ROOT, compose_config

# Old names are aliases, composed and compared in test_experiment_names.py.
EXPERIMENTS = canonical_experiments()
SEARCHES = sorted(p.stem for p in (ROOT / "configs" / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.batch_size=abc",
            r"data.batch_size='abc' is not valid: it must be a positive integer",
        ),
        ("data.batch_size=0", r"data.batch_size=0 .*e.g. data.batch_size=128"),
        ("data.batch_size=-1", r"data.batch_size=-1 is not valid"),
        ("seed=abc", r"seed='abc' is not valid: it must be an integer or null"),
        ("model.optimizer.lr=abc", r"model.optimizer.lr='abc' .*a number >= 0"),
        ("model.optimizer.lr=-0.1", r"model.optimizer.lr=-0.1 is not valid"),
        ("trainer.max_epochs=ten", r"trainer.max_epochs='ten'"),
        ("trainer.devices=0", r"trainer.devices=0 .*device count"),
        ("data.num_workers=-2", r"data.num_workers=-2"),
        (
            "+model.optimizer.learning_rate=0.1",
            r"model.optimizer.learning_rate is not an argument"
            r" of torch.optim.Adam: did you mean model.optimizer.lr\?",
        ),
        ("+model.optimizer.weight_decai=0.1", r"did you mean model.optimizer.weight_decay\?"),
        ("+model.scheduler.patiense=3", r"did you mean model.scheduler.patience\?"),
    ],
)
def test_bad_values_name_key_value_and_fix(override: str, message: str) -> None:
    with pytest.raises(ConfigValueError, match=message):
        check_config(compose_config("train.yaml", [override]))


def test_train_refuses_before_reading_any_data(tmp_path: Path, monkeypatch) -> None:
    """The check runs first: no datamodule is built for a bad batch size."""
    from hydra.core.hydra_config import HydraConfig

    import src.data.mnist_datamodule as mnist
    from src.train import train

    monkeypatch.setattr(mnist.MNISTDataModule, "__init__", lambda *a, **k: pytest.fail("built"))
    cfg = compose_config("train.yaml", ["data.batch_size=abc", f"paths.output_dir={tmp_path}"])
    HydraConfig().set_config(cfg)
    with pytest.raises(ConfigValueError, match="data.batch_size"):
        train(cfg)


@pytest.mark.parametrize(
    "override",
    [f"experiment={e}" for e in EXPERIMENTS]
    + [f"hparams_search={s}" for s in SEARCHES]
    + ["model=timm", "model=torchvision"],
)
def test_shipped_configs_pass(override: str) -> None:
    check_config(compose_config("train.yaml", [override]))


def test_data_problems_fail_before_the_model_is_built(tmp_path: Path, monkeypatch) -> None:
    """A corrupt image is found while the data is decoded, before model and Trainer exist."""
    from hydra.core.hydra_config import HydraConfig

    import src.models.build
    import src.train
    from src.data.components.image_folder import ImageFolderError
    from tests.helpers.cifar_files import write_image_folder

    write_image_folder(tmp_path / "images", ("cat", "dog"), {"train": 4, "test": 2})
    (tmp_path / "images" / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    monkeypatch.setattr(
        src.models.build, "instantiate_model", lambda *a: pytest.fail("model built")
    )
    cfg = compose_config(
        "train.yaml",
        [
            "data=image_folder",
            f"data.data_dir={tmp_path / 'images'}",
            f"paths.output_dir={tmp_path}",
        ],
    )
    HydraConfig().set_config(cfg)
    with pytest.raises(ImageFolderError, match="broken.png"):
        src.train.train(cfg)


def test_command_line_error_is_one_message_before_heavy_imports(tmp_path: Path) -> None:
    """``python src/train.py data.batch_size=abc``: exit status 1, the message once, no
    traceback, no config tree, and torch never imported (the check runs before the training
    stack loads and before the tree is printed)."""
    import subprocess
    import sys

    probe = (
        "import runpy, sys, atexit; "
        "atexit.register(lambda: print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH'));"
        "sys.argv = ['src/train.py', 'data.batch_size=abc', "
        f"'hydra.run.dir={tmp_path}']; runpy.run_path('src/train.py', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert output.count("data.batch_size='abc' is not valid") == 1, output
    assert "Traceback" not in output and "NO_TORCH" in output, output
    assert "CONFIG" not in output and len(output.splitlines()) <= 4, output
