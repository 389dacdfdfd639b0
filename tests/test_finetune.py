"""Fine-tuning: local weights files into library backbones, frozen backbones, a head LR, and
the fine-tuning / ResNet-18 experiments on tiny fake CIFAR files."""

import functools
import os
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from lightning import Trainer
from lightning.pytorch.callbacks import BackboneFinetuning, Callback
from omegaconf import open_dict
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from src.models.classifier_module import ClassifierLitModule
from src.models.components.library_nets import TimmNet, TorchvisionNet
from src.train import train
from tests.conftest import compose_config
from tests.helpers.cifar_files import write_cifar10
from tests.helpers.weight_files import timm_net, write_timm_weights


def _backbone_equal(net: nn.Module, ref: nn.Module, skip: tuple[str, ...] = ()) -> list[str]:
    """Names of ``net.backbone`` tensors that differ from ``ref``'s (``skip`` left out)."""
    ref_sd = ref.state_dict()
    return [
        k
        for k, v in net.backbone.state_dict().items()
        if not k.startswith(skip) and not torch.equal(v, ref_sd[k])
    ]


# ------------------------------------------------------------------ weights files
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_file_loads_into_backbone(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"resnet18{suffix}"
    ref = write_timm_weights(path)
    net = TimmNet("resnet18", 3, 32, 10, checkpoint_path=str(path))
    # 32 px: the CIFAR stem (3x3) replaces the 7x7 one, so only it is skipped, and fc unused.
    assert _backbone_equal(net, ref, skip=("conv1.",)) == []
    assert not torch.equal(
        net.backbone.layer1[0].conv1.weight, timm_net(seed=1).layer1[0].conv1.weight
    )
    report = net.load_report
    assert list(report.skipped) == ["backbone.conv1.weight"]
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    assert report.missing == [] and len(report.loaded) == len(ref.state_dict()) - 3
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resize_keeps_the_pretrained_stem(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.safetensors"
    ref = write_timm_weights(path)
    net = TimmNet("resnet18", 3, 32, 10, checkpoint_path=str(path), resize_to=96)
    assert _backbone_equal(net, ref) == [] and net.load_report.skipped == {}
    assert net.image_size == 32  # the data's size; the network sees 96 px
    features = []
    net.backbone.layer1.register_forward_hook(lambda m, i, o: features.append(o.shape))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert features[0][-1] == 24  # 96 px through the 7x7/2 stem and max-pool


def test_wrapped_state_dicts_load(tmp_path: Path) -> None:
    """Lightning checkpoints (``state_dict``/``net.``) and DDP (``module.``) prefixes come off."""
    ref = timm_net()
    wrapped = {f"module.{k}": v for k, v in ref.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": wrapped}, tmp_path / "ddp.pt")
    net = TimmNet("resnet18", 3, 32, 10, checkpoint_path=str(tmp_path / "ddp.pt"))
    assert _backbone_equal(net, ref, skip=("conv1.",)) == []

    own = TimmNet("resnet18", 3, 32, 10)
    lightning_like = {f"net.{k}": v for k, v in own.state_dict().items()}
    torch.save({"state_dict": lightning_like}, tmp_path / "run.ckpt")
    again = TimmNet("resnet18", 3, 32, 10, checkpoint_path=str(tmp_path / "run.ckpt"))
    assert _backbone_equal(again, own.backbone) == []
    assert torch.equal(again.head.weight, own.head.weight)  # same classes: the head loads too


def test_torchvision_backbone_loads(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    net = TorchvisionNet("resnet18", 3, 32, 10, checkpoint_path=str(tmp_path / "tv.pth"))
    assert _backbone_equal(net, ref, skip=("conv1.", "fc.")) == []


def test_mismatched_files_fail_clearly(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet34").state_dict(), str(tmp_path / "r34.safetensors"))
    with pytest.raises(ValueError, match="does not fit") as err:
        TimmNet("resnet18", 3, 32, 10, checkpoint_path=str(tmp_path / "r34.safetensors"))
    message = str(err.value)
    assert "model.net.checkpoint_path=" in message and "r34.safetensors" in message
    assert "layer1.2." in message and "backbone.conv1.weight" in message

    save_file({"encoder.w": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match=r"none of its keys match \(encoder.w\)"):
        TimmNet("resnet18", 3, 32, 10, checkpoint_path=str(tmp_path / "other.safetensors"))

    wide = {k: torch.zeros(1) for k in timm_net().state_dict()}  # right names, wrong shapes
    torch.save(wide, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="differ in shape: backbone.bn1.weight"):
        TimmNet("resnet18", 3, 32, 10, checkpoint_path=str(tmp_path / "wide.pt"))


class _Payload:
    """Unpickling this creates the marker file: what a hostile checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="holds Python objects.*refused"):
        TimmNet("resnet18", 3, 32, 10, checkpoint_path=str(tmp_path / "evil.pt"))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "neither a torch file"), (b"hello", "neither a torch file"), (None, "not a file")],
)
def test_unreadable_files(tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "weights.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        TimmNet("resnet18", 3, 32, 10, checkpoint_path=str(path))
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        TimmNet("resnet18", 3, 32, 10, checkpoint_path=str(tmp_path / "bad.safetensors"))


def test_pretrained_offline_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    import urllib.error

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(RuntimeError, match="model.net.pretrained=true.*checkpoint_path"):
        TimmNet("resnet18", 3, 32, 10, pretrained=True)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match="model.net.pretrained=true.*URLError"):
        TorchvisionNet("resnet18", 3, 32, 10, pretrained=True)


# --------------------------------------------------------------- freezing, head LR
def _module(head_lr: float | None = None, scheduler=None) -> ClassifierLitModule:
    torch.manual_seed(0)
    net = TimmNet("test_resnet", 3, 16, 4)  # timm's 0.5M-parameter ResNet: fast on CPUs
    return ClassifierLitModule(
        net=net,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        scheduler=scheduler,
        head_lr=head_lr,
    )


def _fit(module: ClassifierLitModule, callbacks: list, epochs: int, tmp_path: Path) -> Trainer:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(16, 3, 16, 16, generator=g), torch.randint(0, 4, (16,), generator=g)
    )
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(data, batch_size=8))
    return trainer


class _Recorder(Callback):
    """Per epoch: did the backbone's convolutions get gradients, and the optimizer's groups."""

    def __init__(self) -> None:
        self.conv_grads: dict[int, bool] = {}
        self.groups: dict[int, list[tuple[int, float]]] = {}
        self.weights: dict[int, torch.Tensor] = {}

    def on_after_backward(self, trainer: Trainer, module: ClassifierLitModule) -> None:
        convs = [m.weight for m in module.backbone.modules() if isinstance(m, nn.Conv2d)]
        got = any(w.grad is not None and w.grad.abs().sum() > 0 for w in convs)
        self.conv_grads[trainer.current_epoch] = (
            self.conv_grads.get(trainer.current_epoch, False) or got
        )

    def on_train_epoch_end(self, trainer: Trainer, module: ClassifierLitModule) -> None:
        epoch = trainer.current_epoch
        self.groups[epoch] = [
            (len(g["params"]), g["lr"]) for g in trainer.optimizers[0].param_groups
        ]
        self.weights[epoch] = module.backbone.layer2[0].conv1.weight.detach().clone()


def test_frozen_backbone_gets_no_gradient_until_it_unfreezes(tmp_path: Path) -> None:
    module = _module()
    start = module.backbone.layer2[0].conv1.weight.detach().clone()
    head_params = len(list(module.net.head.parameters()))
    recorder = _Recorder()
    finetune = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1)
    _fit(module, [finetune, recorder], epochs=2, tmp_path=tmp_path)
    assert recorder.conv_grads == {0: False, 1: True}
    assert torch.equal(recorder.weights[0], start)  # frozen: not moved in epoch 0
    assert not torch.equal(recorder.weights[1], start)
    # Epoch 0: the head and the BatchNorm layers (train_bn) train; epoch 1 adds the backbone.
    (n0, lr0), *rest = recorder.groups[0]
    assert rest == [] and n0 > head_params and lr0 == pytest.approx(0.1)
    assert recorder.groups[1][1][1] == pytest.approx(0.01)


def test_head_gets_its_own_learning_rate(tmp_path: Path) -> None:
    module = _module(head_lr=0.5)
    trainer = _fit(module, [], epochs=1, tmp_path=tmp_path)
    rest, head = trainer.optimizers[0].param_groups
    assert head["lr"] == 0.5 and rest["lr"] == 0.1
    assert {id(p) for p in head["params"]} == {id(p) for p in module.net.head.parameters()}
    assert len(rest["params"]) + len(head["params"]) == len(list(module.parameters()))

    plain = _fit(_module(), [], epochs=1, tmp_path=tmp_path)  # default: one group, as before
    assert len(plain.optimizers[0].param_groups) == 1


def test_one_cycle_keeps_the_head_ratio_and_refuses_unfreezing(tmp_path: Path) -> None:
    onecycle = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1)
    module = _module(head_lr=0.5, scheduler=onecycle)
    module.hparams.scheduler_interval = "step"
    trainer = _fit(module, [], epochs=1, tmp_path=tmp_path)
    rest, head = trainer.optimizers[0].param_groups
    assert head["max_lr"] == pytest.approx(5 * rest["max_lr"])
    finetune = BackboneFinetuning(unfreeze_backbone_at_epoch=1)
    with pytest.raises(ValueError, match="OneCycleLR cannot schedule"):
        _fit(_module(scheduler=onecycle), [finetune], epochs=1, tmp_path=tmp_path)


def test_finetune_needs_a_backbone(tmp_path: Path) -> None:
    from src.models.components.simple_cnn import SimpleCNN

    module = ClassifierLitModule(
        net=SimpleCNN(in_channels=3, num_classes=4),
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
    )
    with pytest.raises(AttributeError, match="no `backbone`.*model=timm"):
        _fit(module, [BackboneFinetuning(unfreeze_backbone_at_epoch=1)], 1, tmp_path)


# -------------------------------------------------------------------- experiments
@pytest.mark.parametrize("experiment", ["cifar10_resnet18_finetune", "cifar10_resnet18"])
def test_experiments_run_a_few_batches(experiment: str, tmp_path: Path) -> None:
    write_cifar10(tmp_path, n_train=40, n_test=16)
    weights = tmp_path / "resnet18.safetensors"
    ref = write_timm_weights(weights)
    overrides = [
        f"experiment={experiment}",
        f"data.data_dir={tmp_path}",
        "data.train_val_test_split=[32,8,16]",
        "data.batch_size=4",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        "+trainer.num_sanity_val_steps=0",
        f"trainer.max_epochs={2 if experiment == 'cifar10_resnet18_finetune' else 1}",
        "trainer.accelerator=cpu",
        "model.channels_last=false",
    ]
    if experiment == "cifar10_resnet18_finetune":
        overrides += [
            "model.net.pretrained=false",
            f"model.net.checkpoint_path={weights}",
            "model.net.resize_to=96",  # smaller than the recipe's 224 to stay fast on CPUs
            "callbacks.finetune.unfreeze_backbone_at_epoch=1",
        ]
    cfg = compose_config("train.yaml", overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
        cfg.extras.print_config = False
        cfg.extras.enforce_tags = False
        cfg.logger = None
        cfg.callbacks.pop("rich_progress_bar", None)
        cfg.callbacks.pop("test_figures", None)
    HydraConfig().set_config(cfg)
    metrics, objects = train(cfg)
    assert "test/acc" in metrics and os.path.exists(tmp_path / "checkpoints" / "last.ckpt")
    net = objects["model"].net
    assert net.backbone.fc.__class__ is nn.Identity
    if experiment == "cifar10_resnet18_finetune":
        assert cfg.model.head_lr == 0.1 and net.load_report is not None
        groups = objects["trainer"].optimizers[0].param_groups
        assert [g["lr"] > 0 for g in groups] == [True, True, True]  # rest, head, backbone
        # The checkpoint rebuilds without the starting-weights file (gone on other machines).
        from src.models.build import load_model_from_checkpoint

        weights.unlink()
        last = tmp_path / "checkpoints" / "last.ckpt"
        rebuilt, _ = load_model_from_checkpoint(last)
        saved = torch.load(last, weights_only=True)["state_dict"]
        assert rebuilt.net.load_report is None
        assert torch.equal(rebuilt.net.head.weight, saved["net.head.weight"])
    else:
        assert isinstance(net.backbone.maxpool, nn.Identity)  # the small-input stem
        assert not torch.equal(net.backbone.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
