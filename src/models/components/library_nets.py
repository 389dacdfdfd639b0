"""Networks by name from timm and torchvision, fitted to the data's channels, size and heads.

Both wrappers take the same shape arguments as the project's own families (``in_channels``,
``image_size``, ``num_classes``, ``heads_config``), so a builder can fill them from the data.
The library network is built without its classifier; its pooled features feed
:func:`~src.models.components.heads.build_head`, which gives single-head and multihead networks
the same way as every other family.

Small-input adaptation (``small_input="auto"``: on for images of 64 px or less):

- ResNet-like nets (a ``conv1`` and a ``maxpool``): the CIFAR stem, a 3x3 stride-1 first
  convolution and no max-pool.
- Patch models (timm ViT, DeiT, BEiT, ...): ``img_size`` = the image size and a patch of
  1/2/4/8 px that leaves at least 7 patches per side (4 for 28 and 32 px, 8 for 64 px).
- timm nets with a patchify stem (ConvNeXt: 4x4 stride 4): a 2x2 stride-2 stem, so that
  28 px images survive the three later downsamplings.
- timm EfficientNet-like nets (a ``conv_stem`` of stride 2): stride 1.
- Anything else is left as the library builds it; every timm/torchvision classifier ends in
  a global pool, so it runs as long as the image survives its downsamplings.

A replaced stem starts from random weights, also with ``pretrained=true``.

Starting weights: ``pretrained=true`` downloads the library's weights (internet, or its cache);
``checkpoint_path`` loads a local ``.safetensors`` or state-dict file into the backbone
(:mod:`~src.models.components.weight_files`). ``resize_to`` resizes the images on the device
before the network, e.g. CIFAR's 32 px to the 224 px a pretrained network was trained at.
"""

import difflib
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.models.components.heads import build_head
from src.models.components.weight_files import LoadReport, load_weights_file


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f" Did you mean {', '.join(close)}?" if close else ""


def check_shape_args(owner: str, **values: Any) -> None:
    """Raise if a shape argument is still unset (``null`` in the config, not filled from data)."""
    unset = [k for k, v in values.items() if v is None]
    if unset:
        keys = ", ".join(f"model.net.{k}" for k in unset)
        raise ValueError(
            f"{owner}: {keys} unset; build the model with src.models.build (fills them from the "
            "data) or set them, e.g. model.net.in_channels=1 model.net.image_size=28 "
            "model.net.num_classes=10."
        )


def use_small_input(small_input: bool | str, image_size: int) -> bool:
    """Whether to adapt the stem: ``"auto"`` means images of 64 px or less."""
    if small_input == "auto":
        return image_size <= 64
    if isinstance(small_input, bool):
        return small_input
    raise ValueError(f"model.net.small_input must be auto, true or false, got {small_input!r}.")


def fitting_patch_size(image_size: int) -> int:
    """Largest patch of 8, 4, 2 or 1 px that divides ``image_size`` into at least 7 per side."""
    for patch in (8, 4, 2):
        if image_size % patch == 0 and image_size // patch >= 7:
            return patch
    return 1


def _cifar_stem(conv: nn.Conv2d) -> nn.Conv2d:
    """A 3x3 stride-1 convolution with the channels of ``conv`` (the usual CIFAR ResNet stem)."""
    return nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None)


def adapt_resnet_stem(net: nn.Module) -> bool:
    """Give a ResNet-like net (``conv1`` + ``maxpool``) the CIFAR stem; ``False`` if not one."""
    conv1, maxpool = getattr(net, "conv1", None), getattr(net, "maxpool", None)
    if maxpool is None or isinstance(maxpool, nn.Identity):
        return False
    if isinstance(conv1, nn.Conv2d):
        net.conv1 = _cifar_stem(conv1)
    elif isinstance(conv1, nn.Sequential) and isinstance(conv1[0], nn.Conv2d):
        conv1[0] = _cifar_stem(conv1[0])  # deep stems (resnet18d): only the first conv strides
    else:
        return False
    net.maxpool = nn.Identity()
    return True


def _unknown_pretrained(key: str, name: str, exc: Exception) -> RuntimeError:
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return RuntimeError(
        f"{key}=true: could not load the pretrained weights of '{name}' ({type(exc).__name__}: "
        f"{first}). They are downloaded, so this needs internet access (or the weights already "
        "in the library's cache; HF_HUB_OFFLINE=1 then skips the network). Offline, save the "
        f"weights where there is internet and pass the file: {key}=false "
        "model.net.checkpoint_path=/path/to/weights.safetensors (see docs/finetuning.md); or "
        f"set {key}=false for random initial weights."
    )


def _check_resize_to(resize_to: int | None) -> None:
    if resize_to is not None and (isinstance(resize_to, bool) or int(resize_to) < 1):
        raise ValueError(
            f"model.net.resize_to must be null or an image size in pixels (e.g. 224), got "
            f"{resize_to!r}."
        )


class _LibraryNet(nn.Module):
    """What both wrappers share: resizing, the local weights file and the forward pass."""

    backbone: nn.Module
    head: nn.Module
    resize_to: int | None = None
    #: What ``checkpoint_path`` loaded (``None`` without one).
    load_report: LoadReport | None = None

    def _load_checkpoint(self, checkpoint_path: str | None) -> None:
        """Load ``checkpoint_path`` into the backbone; the head and the first convolution (the
        stem, replaced for small inputs or other channel counts) may differ in shape."""
        if not checkpoint_path:
            return
        stem = next((n for n, m in self.backbone.named_modules() if isinstance(m, nn.Conv2d)), None)
        may_differ = ("head.",) + ((f"backbone.{stem}.",) if stem else ())
        self.load_report = load_weights_file(self, checkpoint_path, may_differ)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Logits ``(B, num_classes)``, or ``{head: logits}`` with ``heads_config``."""
        if self.resize_to and tuple(x.shape[-2:]) != (self.resize_to, self.resize_to):
            x = F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear")
        return self.head(self.backbone(x))


class TimmNet(_LibraryNet):
    """Any ``timm`` model by name, with the project's heads.

    :param model_name: A ``timm.list_models()`` name, e.g. ``resnet18``, ``convnext_atto``,
        ``vit_tiny_patch16_224``, ``efficientnet_b0``.
    :param in_channels: Image channels (timm's ``in_chans``; it adapts pretrained stems itself).
    :param image_size: Image height/width; picks the small-input adaptation.
    :param num_classes: Classes of the single head (ignored when ``heads_config`` is given).
    :param heads_config: Optional ``{head: num_classes}``; the network then returns a dict.
    :param pretrained: Load timm's pretrained weights (needs internet or timm's cache).
    :param checkpoint_path: A local ``.safetensors`` or torch state-dict file loaded into the
        backbone (keys of the same timm model; its classifier is skipped).
    :param resize_to: Resize the images to this size on the device before the network
        (``null``: as they come); the network is then built for this size.
    :param small_input: ``"auto"`` (images of 64 px or less), ``true`` or ``false``.
    :param head_dropout: Dropout on the features before the head(s).
    :param kwargs: Passed to ``timm.create_model`` (``drop_path_rate``, ``drop_rate``, ...).
    """

    def __init__(
        self,
        model_name: str,
        in_channels: int = 3,
        image_size: int = 224,
        num_classes: int = 1000,
        heads_config: Mapping[str, int] | None = None,
        pretrained: bool = False,
        small_input: bool | str = "auto",
        head_dropout: float = 0.0,
        checkpoint_path: str | None = None,
        resize_to: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        _check_resize_to(resize_to)
        import timm  # here: importing timm takes seconds and only these nets need it

        if not timm.is_model(model_name):
            raise ValueError(
                f"model.net.model_name={model_name!r} is not a timm model."
                f"{_did_you_mean(model_name, timm.list_models())} "
                "List them with python -c \"import timm; print(timm.list_models('*resnet*'))\"."
            )
        check_shape_args(f"TimmNet({model_name})", in_channels=in_channels, image_size=image_size)
        if not heads_config:
            check_shape_args(f"TimmNet({model_name})", num_classes=num_classes)
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.resize_to = int(resize_to) if resize_to else None
        image_size = self.resize_to or image_size  # the size the network sees
        small = use_small_input(small_input, image_size)
        base = dict(kwargs, pretrained=pretrained, in_chans=in_channels, num_classes=0)
        try:
            self.backbone = self._create(timm, model_name, base, small, image_size)
        except (OSError, RuntimeError, ValueError) as exc:
            if pretrained:
                raise _unknown_pretrained("model.net.pretrained", model_name, exc) from exc
            raise
        if small:
            self._adapt_stem()
        # Nets with a pre-logits layer (MobileNetV3) output head_hidden_size, not num_features.
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.num_features = width  # feature width feeding the head(s), as in every family
        self.head = build_head(width, num_classes, heads_config, head_dropout)
        self._load_checkpoint(checkpoint_path)

    @staticmethod
    def _create(timm: Any, name: str, base: dict, small: bool, image_size: int) -> nn.Module:
        """Build ``name``; patch models get ``img_size`` (and a small patch for small images)."""
        size_args = {"img_size": image_size}
        if small:
            size_args["patch_size"] = fitting_patch_size(image_size)
        try:
            return timm.create_model(name, **base, **size_args)
        except TypeError as exc:
            if "img_size" not in str(exc) and "patch_size" not in str(exc):
                raise
        return timm.create_model(name, **base)  # not a patch model: it takes no image size

    def _adapt_stem(self) -> None:
        net = self.backbone
        if adapt_resnet_stem(net):
            return
        stem = getattr(net, "stem", None)
        first = stem[0] if isinstance(stem, nn.Sequential) and len(stem) else None
        if (
            isinstance(first, nn.Conv2d)
            and first.stride[0] > 2
            and first.kernel_size == first.stride
        ):
            stem[0] = nn.Conv2d(first.in_channels, first.out_channels, 2, 2)  # ConvNeXt patchify
            return
        conv_stem = getattr(net, "conv_stem", None)
        if isinstance(conv_stem, nn.Conv2d) and conv_stem.stride[0] == 2:
            conv_stem.stride = (1, 1)  # EfficientNet/MobileNet: weights keep their shape


def _replace_module(net: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, child, module)


class TorchvisionNet(_LibraryNet):
    """Any ``torchvision.models`` network by name (``torchvision.models.get_model``), with the
    project's heads.

    The last ``nn.Linear`` (the classifier) becomes ``nn.Identity`` and its input features feed
    the head(s); for a channel count other than 3 the first convolution is replaced. ViT names
    get ``image_size`` = the image size (torchvision fixes their patch size: the image must be a
    multiple of it; use ``model=timm`` for small patches).

    :param name: A ``torchvision.models.list_models()`` name, e.g. ``resnet18``.
    :param in_channels: Image channels.
    :param image_size: Image height/width; picks the small-input adaptation.
    :param num_classes: Classes of the single head (ignored when ``heads_config`` is given).
    :param heads_config: Optional ``{head: num_classes}``; the network then returns a dict.
    :param pretrained: Load the ``DEFAULT`` weights (needs internet or torch's hub cache).
    :param checkpoint_path: A local ``.safetensors`` or torch state-dict file loaded into the
        backbone (keys of the same torchvision model; its classifier is skipped).
    :param resize_to: Resize the images to this size on the device before the network
        (``null``: as they come); the network is then built for this size.
    :param small_input: ``"auto"`` (images of 64 px or less), ``true`` or ``false``; only
        ResNet-like nets are adapted (CIFAR stem), others run as built.
    :param head_dropout: Dropout on the features before the head(s).
    :param kwargs: Passed to ``torchvision.models.get_model``.
    """

    def __init__(
        self,
        name: str,
        in_channels: int = 3,
        image_size: int = 224,
        num_classes: int = 1000,
        heads_config: Mapping[str, int] | None = None,
        pretrained: bool = False,
        small_input: bool | str = "auto",
        head_dropout: float = 0.0,
        checkpoint_path: str | None = None,
        resize_to: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        _check_resize_to(resize_to)
        import torchvision

        known = torchvision.models.list_models()
        if name not in known:
            raise ValueError(
                f"model.net.name={name!r} is not a torchvision model.{_did_you_mean(name, known)}"
                ' List them with python -c "import torchvision; '
                'print(torchvision.models.list_models())".'
            )
        check_shape_args(f"TorchvisionNet({name})", in_channels=in_channels, image_size=image_size)
        if not heads_config:
            check_shape_args(f"TorchvisionNet({name})", num_classes=num_classes)
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.resize_to = int(resize_to) if resize_to else None
        image_size = self.resize_to or image_size  # the size the network sees
        if name.startswith("vit_"):
            kwargs.setdefault("image_size", image_size)
        try:
            net = torchvision.models.get_model(
                name, weights="DEFAULT" if pretrained else None, **kwargs
            )
        except (OSError, RuntimeError, ValueError) as exc:
            if pretrained:
                raise _unknown_pretrained("model.net.pretrained", name, exc) from exc
            raise
        if in_channels != 3:
            self._replace_first_conv(net, in_channels)
        if use_small_input(small_input, image_size):
            adapt_resnet_stem(net)
        linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(
                f"model.net.name={name!r} has no linear classifier to replace with the project's "
                "heads (e.g. squeezenet classifies with a convolution); pick another network."
            )
        last_name, last = linears[-1]
        _replace_module(net, last_name, nn.Identity())
        self.backbone = net
        self.num_features = last.in_features  # feature width feeding the head(s)
        self.head = build_head(last.in_features, num_classes, heads_config, head_dropout)
        self._load_checkpoint(checkpoint_path)

    @staticmethod
    def _replace_first_conv(net: nn.Module, in_channels: int) -> None:
        """Swap the first convolution for one reading ``in_channels``; its filters are the old
        ones' channel mean, repeated (pretrained RGB filters carry over to grey images)."""
        name, conv = next((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
        new = nn.Conv2d(
            in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            bias=conv.bias is not None,
        )
        if conv.groups == 1:
            with torch.no_grad():  # scaled like timm: grey images give RGB-sized activations
                mean = conv.weight.mean(1, keepdim=True) * (3 / in_channels)
                new.weight.copy_(mean.expand_as(new.weight))
                if conv.bias is not None:
                    new.bias.copy_(conv.bias)
        _replace_module(net, name, new)
