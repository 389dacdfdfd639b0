"""Networks by name from timm and torchvision: fitted to the data, small-input stems, heads.

Every network is built with random weights (``pretrained=false``): nothing is downloaded.
"""

import urllib.error
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from src.models.build import instantiate_model
from src.models.components.library_nets import TimmNet, TorchvisionNet, fitting_patch_size

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
MNIST_LIKE = ((1, 28, 28), 10)
CIFAR100_LIKE = ((3, 32, 32), 100)
HEADS = {"digit": 10, "thickness": 5, "smoothness": 3}


def forward_backward(net: nn.Module, shape: tuple[int, int, int]) -> torch.Tensor | dict:
    """Run a batch of 2 random images through ``net`` and back; every parameter gets a grad."""
    net.train()
    out = net(torch.randn(2, *shape))
    logits = out.values() if isinstance(out, dict) else [out]
    sum(t.logsumexp(1).sum() for t in logits).backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    return out


@pytest.mark.parametrize(("shape", "num_classes"), [MNIST_LIKE, CIFAR100_LIKE])
@pytest.mark.parametrize("family", ["timm", "torchvision"])
def test_resnet18_fits_the_data_with_the_cifar_stem(family: str, shape, num_classes) -> None:
    cls, name = (TimmNet, "resnet18") if family == "timm" else (TorchvisionNet, "resnet18")
    net = cls(name, in_channels=shape[0], image_size=shape[1], num_classes=num_classes)
    out = forward_backward(net, shape)
    assert out.shape == (2, num_classes)
    conv1 = net.backbone.conv1
    assert (conv1.in_channels, conv1.kernel_size, conv1.stride) == (shape[0], (3, 3), (1, 1))
    assert isinstance(net.backbone.maxpool, nn.Identity)


def test_large_images_keep_the_library_stem() -> None:
    net = TimmNet("resnet18", in_channels=3, image_size=96, num_classes=10)
    assert net.backbone.conv1.stride == (2, 2)
    assert isinstance(net.backbone.maxpool, nn.MaxPool2d)
    forced = TorchvisionNet("resnet18", 3, 96, 10, small_input=True)
    assert forced.backbone.conv1.stride == (1, 1)


def test_timm_vit_gets_a_patch_that_fits_small_images() -> None:
    net = TimmNet("vit_tiny_patch16_224", in_channels=1, image_size=28, num_classes=10)
    assert net.backbone.patch_embed.patch_size == (4, 4)
    assert net.backbone.patch_embed.grid_size == (7, 7)
    assert forward_backward(net, (1, 28, 28)).shape == (2, 10)
    assert [fitting_patch_size(s) for s in (16, 28, 32, 64)] == [2, 4, 4, 8]


def test_timm_convnext_runs_on_mnist_sized_images() -> None:
    # Its 4x4 stride-4 stem would leave 28 px images too small for the three downsamplings.
    net = TimmNet("convnext_atto", in_channels=1, image_size=28, num_classes=10)
    assert net.backbone.stem[0].stride == (2, 2)
    assert forward_backward(net, (1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("family", ["timm", "torchvision"])
def test_multihead_on_library_backbones(family: str) -> None:
    cls = TimmNet if family == "timm" else TorchvisionNet
    net = cls("resnet18", in_channels=1, image_size=28, heads_config=HEADS)
    out = forward_backward(net, (1, 28, 28))
    assert {h: tuple(v.shape) for h, v in out.items()} == {h: (2, n) for h, n in HEADS.items()}


def test_torchvision_other_channels_replace_the_first_conv() -> None:
    net = TorchvisionNet("mobilenet_v3_small", in_channels=1, image_size=32, num_classes=7)
    first = next(m for m in net.backbone.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    assert forward_backward(net, (1, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: TimmNet("resnt18", 1, 28, 10), r"model.net.model_name='resnt18'.*resnet18"),
        (lambda: TorchvisionNet("resnt18", 1, 28, 10), r"model.net.name='resnt18'.*resnet18"),
        (lambda: TimmNet("resnet18", None, 28, 10), r"model.net.in_channels unset"),
        (lambda: TimmNet("resnet18", 1, 28, 10, small_input="yes"), r"small_input"),
    ],
)
def test_bad_names_and_unset_shapes_are_clear_errors(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_pretrained_offline_names_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match=r"model.net.pretrained=true.*internet"):
        TimmNet("resnet18", 1, 28, 10, pretrained=True)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights to find
    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(RuntimeError, match=r"model.net.pretrained=true.*internet"):
        TorchvisionNet("resnet18", 1, 28, 10, pretrained=True)


@pytest.mark.parametrize("config", ["timm", "torchvision"])
def test_configs_build_a_module_that_trains_a_step(config: str) -> None:
    overrides = [
        f"model={config}",
        "model.net.in_channels=1",
        "model.net.image_size=28",
        "model.net.num_classes=10",
    ]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    model = instantiate_model(cfg.model)
    assert model.heads == {"label": 10}
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    loss = model.model_step((x, y))[0]
    assert torch.isfinite(loss)
    loss.backward()


def test_timm_arguments_pass_through() -> None:
    net = TimmNet("convnext_atto", in_channels=3, image_size=32, num_classes=10, drop_path_rate=0.1)
    rates = [m.drop_prob for m in net.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.1)


def test_timm_efficientnet_like_stem_stops_striding_on_small_images() -> None:
    small = TimmNet("mobilenetv3_small_050", in_channels=1, image_size=28, num_classes=10)
    assert small.backbone.conv_stem.stride == (1, 1)
    assert forward_backward(small, (1, 28, 28)).shape == (2, 10)
    large = TimmNet("mobilenetv3_small_050", in_channels=3, image_size=128, num_classes=10)
    assert large.backbone.conv_stem.stride == (2, 2)
