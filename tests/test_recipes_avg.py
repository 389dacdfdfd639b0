"""Training recipes: EMA/SWA weight averaging, warm-up + cosine, flip TTA, ``recipe=cifar_strong``.

Weight averaging is checked end to end on tiny real-MNIST runs: the averaged weights differ from
the raw ones, are what validation, test, the checkpoint's ``state_dict``, predict and export
use, the raw ones stay in the checkpoint, and an interrupted run resumes to the same weights.
"""

import os
import signal
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from lightning import Callback, LightningModule, Trainer
from omegaconf import DictConfig, open_dict
from torch import nn

from src.callbacks.weight_averaging import EMA, SWA
from src.models.build import load_model_from_checkpoint
from src.models.classifier_module import ClassifierLitModule
from src.models.components.schedulers import WarmupCosineLR
from src.utils.trusted_targets import trusted_kind
from src.utils.utils import RunInterrupted
from tests.conftest import SMALL_SPLIT, _tune_for_tests, compose_config
from tests.test_resume import _assert_same_weights, _interrupt_and_resume, _run

RECORDER = f"{__name__}.Recorder"


class Recorder(Callback):
    """Test-only: the LR used by every training step and the raw weights after it."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer: Trainer, *args: object) -> None:
        """Record the LR this step trains with."""
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *args: object
    ) -> None:
        """Record the raw parameters after the optimizer step."""
        self.weights.append({k: v.detach().clone() for k, v in pl_module.named_parameters()})


def _train(out: Path, *overrides: str, epochs: int = 1) -> tuple[dict, dict]:
    """A few batches of real MNIST with ``overrides``: ``(metrics, objects)`` of ``train``."""
    from src.train import train

    cfg = compose_config("train.yaml", [SMALL_SPLIT, *overrides])
    _tune_for_tests(cfg, out)
    with open_dict(cfg):
        cfg.trainer.limit_train_batches = 3
        cfg.trainer.max_epochs = epochs
        cfg.trainer.limit_val_batches = 1
        cfg.trainer.limit_test_batches = 2
        cfg.callbacks.recorder = {"_target_": RECORDER}
    HydraConfig().set_config(cfg)
    return train(cfg)


def _callback(objects: dict, kind: type) -> Callback:
    return next(c for c in objects["callbacks"] if isinstance(c, kind))


def _params(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    names = {n for n, _ in module.named_parameters()}
    return {k: v for k, v in state.items() if k in names}


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.allclose(a[k], b[k]) for k in a)


def _stage_metrics(module: LightningModule, datamodule: object, stage: str) -> dict[str, float]:
    """Validate or test ``module`` on the same limited batches as :func:`_train`."""
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        limit_test_batches=2,
    )
    run = trainer.validate if stage == "val" else trainer.test
    return {k: float(v) for k, v in run(module, datamodule=datamodule, verbose=False)[0].items()}


# ------------------------------------------------------------------------------- EMA
@pytest.fixture(scope="module")
def ema_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """A tiny run with EMA (decay 0.5, so three steps move the average visibly)."""
    out = tmp_path_factory.mktemp("ema")
    metrics, objects = _train(
        out, "callbacks=[default,ema]", "callbacks.ema.decay=0.5", "callbacks.ema.warmup=false"
    )
    return out / "checkpoints" / "last.ckpt", metrics, objects


def test_ema_checkpoint_holds_averaged_and_raw_weights(ema_run: tuple) -> None:
    """``state_dict`` is the EMA of the raw weights after each step; raw ones are kept too;
    everything loads with ``weights_only=True``."""
    ckpt_path, _, objects = ema_run
    ckpt = torch.load(ckpt_path, weights_only=True)
    model = objects["model"]
    averaged, raw = _params(ckpt["state_dict"], model), _params(ckpt["current_model_state"], model)
    assert _differs(averaged, raw)
    steps = _callback(objects, Recorder).weights
    assert len(steps) == 3
    for name, value in averaged.items():
        expected = steps[0][name]
        for step in steps[1:]:
            expected = 0.5 * expected + 0.5 * step[name]  # decay 0.5, first update copies
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(raw[name], steps[-1][name], rtol=0, atol=0)
    assert int(ckpt["averaging_state"]["n_averaged"]) == 3
    # entries that are not weights (the best val accuracy) come from the live module
    assert (
        ckpt["state_dict"]["val_acc_best.max_value"]
        == ckpt["current_model_state"]["val_acc_best.max_value"]
    )
    assert torch.isfinite(ckpt["state_dict"]["val_acc_best.max_value"])


def test_ema_weights_are_validated_and_tested(ema_run: tuple) -> None:
    """Logged val/test metrics are those of the averaged weights, not of the raw ones."""
    ckpt_path, metrics, objects = ema_run
    averaged, _ = load_model_from_checkpoint(ckpt_path)
    raw, _ = load_model_from_checkpoint(ckpt_path)
    raw.load_state_dict(torch.load(ckpt_path, weights_only=True)["current_model_state"])
    datamodule = objects["datamodule"]
    for stage in ("val", "test"):
        with_average = _stage_metrics(averaged, datamodule, stage)
        with_raw = _stage_metrics(raw, datamodule, stage)
        assert float(metrics[f"{stage}/loss"]) == pytest.approx(with_average[f"{stage}/loss"])
        assert with_raw[f"{stage}/loss"] != pytest.approx(with_average[f"{stage}/loss"])


def test_ema_weights_reach_predict_and_export(ema_run: tuple, tmp_path: Path) -> None:
    """``load_model_from_checkpoint`` (predict, export) builds the averaged weights."""
    from src.export import export
    from tests.test_export import export_cfg

    ckpt_path, _, _ = ema_run
    ckpt = torch.load(ckpt_path, weights_only=True)
    module, meta = load_model_from_checkpoint(ckpt_path)
    for name, value in _params(ckpt["state_dict"], module).items():
        torch.testing.assert_close(dict(module.named_parameters())[name], value, rtol=0, atol=0)
    raw, _ = load_model_from_checkpoint(ckpt_path)
    raw.load_state_dict(ckpt["current_model_state"])

    _, objects = export(export_cfg(tmp_path, ckpt_path, "torch_export", "check=false"))
    images = torch.randn(4, *meta["input_shape"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exported = torch.export.load(str(objects["path"])).module()(images)["label"]
        torch.testing.assert_close(exported, module.forward_heads(images)["label"])
        assert not torch.allclose(exported, raw.forward_heads(images)["label"], atol=1e-4)


def test_ema_resumes_mid_epoch_exactly(cfg_train: DictConfig, tmp_path: Path) -> None:
    """EMA with MixUp/CutMix, killed at step 9 and resumed from step 8 (2 of 6 batches of
    epoch 1): same averaged and raw weights as an uninterrupted run."""
    extra = {
        "callbacks.ema": {"_target_": "src.callbacks.weight_averaging.EMA", "decay": 0.9},
        "model.mix": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0},
        "data.train_val_test_split": [192, 48, 64],  # 6 steps per epoch
        "callbacks.model_checkpoint.every_n_train_steps": 4,
    }
    _interrupt_and_resume(cfg_train, tmp_path, kill_step=9, ckpt_step=8, ckpt_epoch=1, **extra)
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    for key in ("current_model_state", "averaging_state"):
        assert full[key].keys() == resumed[key].keys()
        for name, value in full[key].items():
            torch.testing.assert_close(resumed[key][name], value, rtol=0, atol=1e-6, msg=name)
    assert full["callbacks"]["EMA"] == resumed["callbacks"]["EMA"]


class SignalAtStep(Callback):
    """Test-only: send this process SIGTERM as the training batch after ``step`` starts."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, *args: object) -> None:
        """Signal once; the interrupt callback saves at the end of this batch."""
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_ema_resumes_exactly_after_sigterm(cfg_train: DictConfig, tmp_path: Path) -> None:
    """SIGTERM mid-epoch: the interrupt callback (listed before EMA) saves the step, with the
    step's average applied; the resumed run ends like an uninterrupted one."""
    ema = {"callbacks.ema": {"_target_": "src.callbacks.weight_averaging.EMA", "decay": 0.9}}
    full = _run(cfg_train, tmp_path / "full", **ema)
    sigterm = {"_target_": f"{__name__}.SignalAtStep", "step": 16}
    with pytest.raises(RunInterrupted):
        _run(cfg_train, tmp_path / "a", **{"callbacks.signal": sigterm}, **ema)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 17 and ckpt["callbacks"]["EMA"]["latest_update_step"] == 17
    resumed = _run(cfg_train, tmp_path / "b", ckpt_path=str(last), **ema)
    _assert_same_weights(
        tmp_path / "full/checkpoints/last.ckpt",
        tmp_path / "b/checkpoints/last.ckpt",
    )
    assert resumed["test/acc"] == pytest.approx(full["test/acc"], abs=1e-6)


def test_ema_warmup_forgets_the_initial_weights() -> None:
    """With warm-up the n-th update keeps (1+n)/(10+n) of the average, capped at the decay;
    without it, the decay from the first update on."""
    average, current = torch.zeros(3), torch.ones(3)
    for ema, n, kept in [(EMA(0.999, warmup=True), 1, 2 / 11), (EMA(0.9, warmup=True), 500, 0.9)]:
        avg_fn = ema._kwargs["avg_fn"]
        assert torch.allclose(avg_fn(average, current, torch.tensor(n)), torch.full((3,), 1 - kept))
    plain = EMA(0.9)._kwargs["avg_fn"]  # Lightning's own: the decay from the first update on
    assert torch.allclose(plain(average, current, torch.tensor(1)), torch.full((3,), 0.1))
    remaining = {}
    for warmup in (True, False):
        module, ema = nn.Linear(2, 1, bias=False), EMA(0.999, warmup=warmup)
        nn.init.zeros_(module.weight)
        averaged = torch.optim.swa_utils.AveragedModel(module, **ema._kwargs)
        averaged.update_parameters(module)  # the first update copies the initial zeros
        with torch.no_grad():
            module.weight.fill_(1.0)
        for _ in range(430):  # one speedrun epoch of updates towards weights of 1
            averaged.update_parameters(module)
        remaining[warmup] = 1 - averaged.module.weight.mean().item()  # share of the start
    assert remaining[True] < 0.01 and remaining[False] > 0.6, remaining


def test_ema_rejects_bad_decay() -> None:
    with pytest.raises(ValueError, match=r"callbacks\.ema\.decay=1\.5"):
        EMA(decay=1.5)


# ------------------------------------------------------------------------------- SWA
def test_swa_is_the_mean_from_start(tmp_path: Path) -> None:
    """SWA from step 2 of 3 (start=0.5): the checkpoint holds the mean of steps 2 and 3."""
    _, objects = _train(tmp_path, "callbacks=[default,swa]", "callbacks.swa.start=0.5")
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    steps = _callback(objects, Recorder).weights
    averaged = _params(ckpt["state_dict"], objects["model"])
    for name, value in averaged.items():
        expected = (steps[1][name] + steps[2][name]) / 2
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
    assert _differs(averaged, _params(ckpt["current_model_state"], objects["model"]))
    assert int(ckpt["averaging_state"]["n_averaged"]) == 2


def test_before_the_first_update_the_raw_weights_are_used(tmp_path: Path) -> None:
    """SWA starting after the run's 3 steps: validation, test and checkpoint use the raw weights
    (not the initial ones the average was created with)."""
    metrics, objects = _train(tmp_path, "callbacks=[default,swa]", "callbacks.swa.start=10")
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert int(ckpt["averaging_state"]["n_averaged"]) == 0
    steps = _callback(objects, Recorder).weights
    for name, value in _params(ckpt["state_dict"], objects["model"]).items():
        torch.testing.assert_close(value, steps[-1][name], rtol=0, atol=0)
    module, _ = load_model_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    for stage in ("val", "test"):
        expected = _stage_metrics(module, objects["datamodule"], stage)[f"{stage}/loss"]
        assert float(metrics[f"{stage}/loss"]) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"start": 2.5}, "start=2.5"), ({"update_every_n_steps": 0}, "n_steps=0")],
)
def test_swa_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SWA(**kwargs)


# ---------------------------------------------------------------------- warm-up + cosine
def _lrs(scheduler_args: dict, total: int, lr: float = 1.0) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = WarmupCosineLR(optimizer, total_steps=total, **scheduler_args)
    out = []
    for _ in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return [*out, optimizer.param_groups[0]["lr"]]


def test_warmup_cosine_rises_linearly_then_decays_to_the_floor() -> None:
    lrs = _lrs({"warmup": 4, "start_factor": 0.1, "min_lr": 0.05}, total=12)
    assert lrs[:5] == pytest.approx([0.1, 0.325, 0.55, 0.775, 1.0])  # linear, then the peak
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:], strict=False))  # cosine: always down
    assert lrs[-1] == pytest.approx(0.05)  # the floor after the last step
    fraction = {"warmup": 0.25, "start_factor": 0.1, "min_lr": 0.05}
    steps = {**fraction, "warmup": 3}
    assert _lrs(fraction, total=12) == pytest.approx(_lrs(steps, total=12))  # 0.25 of 12 = 3
    assert _lrs({"warmup": 0}, total=5)[0] == 1.0  # no warm-up: starts at the peak


@pytest.mark.parametrize(
    ("warmup", "message"), [(12, "only 12"), (1.5, "warmup=1.5"), (-0.1, "warmup=-0.1")]
)
def test_warmup_cosine_rejects_bad_warmup(warmup: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _lrs({"warmup": warmup}, total=12)


def test_warmup_cosine_over_a_run(tmp_path: Path) -> None:
    """``model/scheduler=warmup_cosine``: total steps come from the trainer, stepped per batch."""
    _, objects = _train(
        tmp_path,
        "model/scheduler=warmup_cosine",
        "model.scheduler.warmup=2",
        "model.scheduler.min_lr=0.0001",
        epochs=2,
    )
    lrs = _callback(objects, Recorder).lrs
    assert len(lrs) == 6  # 2 epochs of 3 batches, one LR per step
    peak = 0.001  # the optimizer lr of model=mnist
    assert lrs[0] == pytest.approx(0.01 * peak) and lrs[2] == pytest.approx(peak)
    assert lrs[0] < lrs[1] < lrs[2] > lrs[3] > lrs[4] > lrs[5]
    scheduler = objects["trainer"].lr_scheduler_configs[0].scheduler
    assert scheduler.get_last_lr() == pytest.approx([0.0001])
    # checkpoints naming it still load (predict/export allow-list)
    assert trusted_kind(objects["cfg"].model.scheduler._target_) == "learning-rate scheduler"


# ---------------------------------------------------------------------------------- TTA
def test_tta_hflip_test_step_is_the_mean_of_both_views() -> None:
    """``tta="hflip"``: test-step logits (and predict probabilities) average image and mirror;
    training sees the image only."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 5, 6))
    model = ClassifierLitModule(net, partial(torch.optim.SGD, lr=0.1), tta="hflip").eval()
    x, y = torch.randn(8, 3, 4, 5), torch.randint(0, 6, (8,))
    with torch.no_grad():
        expected = (net(x) + net(x.flip(-1))) / 2
        out = model.test_step((x, y), 0)
        torch.testing.assert_close(out["logits"]["label"], expected)
        assert not torch.allclose(expected, net(x))
        torch.testing.assert_close(model.predict_step(x, 0)["label"], expected.softmax(-1))
        accuracy = (expected.argmax(-1) == y).float().mean()
        torch.testing.assert_close(model.metrics["test_label"].compute(), accuracy)
        model.train()
        torch.testing.assert_close(model.forward_heads(x)["label"], net(x))


def test_tta_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match=r"model\.tta='vflip'.*hflip"):
        ClassifierLitModule(nn.Linear(2, 2), partial(torch.optim.SGD, lr=0.1), tta="vflip")


# ------------------------------------------------------------------------------- recipe
def test_cifar_strong_composes_and_trains(tmp_path: Path) -> None:
    """``recipe=cifar_strong``: EMA, warm-up + cosine, label smoothing 0.1 and flip TTA."""
    metrics, objects = _train(tmp_path, "recipe=cifar_strong")
    model, trainer = objects["model"], objects["trainer"]
    assert isinstance(_callback(objects, EMA), EMA)
    assert isinstance(trainer.lr_scheduler_configs[0].scheduler, WarmupCosineLR)
    assert trainer.lr_scheduler_configs[0].interval == "step"
    assert model.criteria["label"].criterion.label_smoothing == 0.1
    assert model.hparams.tta == "hflip"
    assert torch.isfinite(torch.tensor(float(metrics["test/loss"])))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert "current_model_state" in ckpt
    assert load_model_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")[0].hparams.tta == (
        "hflip"
    )


def test_experiment_values_win_over_the_recipe() -> None:
    """The recipe sits before the experiment: an experiment's own choices override it."""
    cfg = compose_config("train.yaml", ["recipe=cifar_strong", "experiment=cifar10_cnn_speedrun"])
    assert cfg.model.scheduler._target_.endswith("OneCycleLR")  # the experiment's schedule
    assert cfg.model.criterion.label_smoothing == 0.2  # the experiment's smoothing
    assert "ema" in cfg.callbacks and cfg.model.tta == "hflip"  # the recipe's additions


def test_switches_are_off_by_default() -> None:
    cfg = compose_config("train.yaml", [])
    assert "ema" not in cfg.callbacks and "swa" not in cfg.callbacks
    assert cfg.model.tta is None and cfg.hydra.runtime.choices.recipe is None
    assert cfg.model.scheduler._target_.endswith("ReduceLROnPlateau")


class _TinyRegressor(LightningModule):
    """Test-only: a linear layer fitted to random data, so EMA has something to average."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        return nn.functional.mse_loss(self.layer(batch[0]), batch[1])

    def validation_step(self, batch: list[torch.Tensor], _: int) -> None:
        self.log("val/loss", nn.functional.mse_loss(self.layer(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


class _SaveDuringValidation(Callback):
    """Test-only: writes a checkpoint mid-validation (as the SIGTERM handler may) and records
    the averaged weights (in the module then) and the raw ones (in the EMA's copy)."""

    def __init__(self, path: Path, ema: EMA) -> None:
        self.path, self.ema, self.seen = path, ema, {}

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *_: object
    ) -> None:
        if not self.seen:
            self.seen["averaged"] = pl_module.layer.weight.detach().clone()
            self.seen["raw"] = self.ema._average_model.module.layer.weight.detach().clone()
            trainer.save_checkpoint(self.path)


def test_ema_checkpoint_written_during_validation_keeps_both_weight_sets(tmp_path: Path) -> None:
    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    ema = EMA(decay=0.9)
    saver = _SaveDuringValidation(tmp_path / "mid_val.ckpt", ema)
    trainer = Trainer(
        max_epochs=1,
        callbacks=[ema, saver],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
    )
    trainer.fit(_TinyRegressor(), loader, loader)
    assert not torch.allclose(saver.seen["averaged"], saver.seen["raw"])
    checkpoint = torch.load(saver.path, weights_only=True)
    assert torch.equal(checkpoint["state_dict"]["layer.weight"], saver.seen["averaged"])
    assert torch.equal(checkpoint["current_model_state"]["layer.weight"], saver.seen["raw"])
