"""The architecture zoo: every model config builds, trains a step and has the size its name says.

Model configs are composed through ``train.yaml`` exactly as ``python src/train.py model=<name>``
does, so the tests see what users get (defaults, inheritance between configs, interpolations).
"""

import functools
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from src.models.build import instantiate_model
from src.models.classifier_module import ClassifierLitModule
from src.models.components.convnext_v2 import ConvNeXtV2
from src.models.components.heads import MultiHead
from src.models.components.simple_cnn import SimpleCNN
from src.models.components.simple_dense_net import SimpleDenseNet
from src.models.components.simple_efficientnet import SimpleEfficientNet
from src.models.components.vision_transformer import VisionTransformer

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
MODEL_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
#: Model configs that are not models but the shared base the others extend.
BASE_CONFIGS = {"classifier"}
#: Networks by name from a library: their size depends on the name (tests/test_library_nets.py).
LIBRARY_CONFIGS = {"timm", "torchvision"}
#: One config per family with its shapes left to the data and a size preset from
#: ``configs/model/net/`` (tests/test_model_presets.py); every other name is an alias of one.
FAMILY_CONFIGS = {"sdn", "cnn", "efficientnet", "vit", "convnext"}
#: Names without a size, or (kept for compatibility) with a size that is not the real one:
#: ``{config: its stated parameter count}``.
LEGACY_NAMES = {
    "mnist": 68_048,  # the original template's default SimpleDenseNet
    "mnist_cnn": 421_482,  # short name for SimpleCNN 421K
    "mnist_convnext_68k": 73_000,  # compatibility name for ConvNeXt-V2 small (73K)
    "cifar10_cnn_64k": 3_300_000,
    "cifar10_convnext_210k": 288_000,
    "cifar100_cnn_64k": 3_300_000,
    "cifar100_convnext_210k": 290_000,
    "cifar100_coarse_cnn_64k": 3_300_000,
}
#: Intended input ``(C, H, W)`` and single-head class count, by config-name prefix.
DATASETS = {
    "mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "cifar100_coarse": ((3, 32, 32), 20),
}
SIZE_SUFFIX = re.compile(r"_(\d+(?:\.\d+)?)([km])$")
MODELS = [
    name for name in MODEL_CONFIGS if name not in BASE_CONFIGS | LIBRARY_CONFIGS | FAMILY_CONFIGS
]


def stated_size(name: str) -> int:
    """Parameter count a config name states: ``*_8k`` -> 8,000, ``*_3.3m`` -> 3,300,000."""
    if name in LEGACY_NAMES:
        return LEGACY_NAMES[name]
    match = SIZE_SUFFIX.search(name)
    if not match:
        pytest.fail(
            f"configs/model/{name}.yaml does not end in its parameter count (e.g. _68k, _3.3m); "
            "rename it or add it to LEGACY_NAMES with the size it stands for."
        )
    return round(float(match[1]) * {"k": 1e3, "m": 1e6}[match[2]])


def dataset_of(name: str) -> tuple[tuple[int, int, int], int]:
    """Intended input shape and class count, from the longest matching name prefix."""
    prefixes = [p for p in DATASETS if name == p or name.startswith(p + "_")]
    if not prefixes:
        pytest.fail(
            f"No intended input shape for configs/model/{name}.yaml; add its prefix to DATASETS."
        )
    return DATASETS[max(prefixes, key=len)]


def compose_train(*overrides: str) -> DictConfig:
    """Compose ``train.yaml`` with command-line style overrides."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def build(name: str, *overrides: str) -> ClassifierLitModule:
    """Instantiate ``model=<name>`` the way ``src/train.py`` does."""
    return instantiate_model(compose_train(f"model={name}", *overrides).model)


def count(module: torch.nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def random_batch(
    shape: tuple[int, int, int], heads: dict[str, int], size: int = 4
) -> tuple[torch.Tensor, torch.Tensor | dict[str, torch.Tensor]]:
    """Random images and labels (a tensor for one head, a dict for several)."""
    x = torch.randn(size, *shape)
    labels = {h: torch.randint(0, n, (size,)) for h, n in heads.items()}
    return x, labels if len(heads) > 1 else next(iter(labels.values()))


def test_every_config_is_covered() -> None:
    """Every architecture family, size and compatibility name exists as a model config."""
    expected = {
        "mnist", "mnist_sdn_8k", "mnist_sdn_68k", "mnist_cnn", "mnist_cnn_8k", "mnist_cnn_68k",
        "mnist_cnn_421k", "mnist_multihead_cnn_422k", "mnist_efficientnet_22k",
        "mnist_efficientnet_210k", "mnist_efficientnet_7m", "mnist_vit_38k", "mnist_vit_210k",
        "mnist_vit_821k", "mnist_convnext_18k", "mnist_convnext_68k", "mnist_convnext_73k",
        "mnist_convnext_288k", "mnist_convnext_725k", "cifar10_cnn_64k", "cifar10_convnext_210k",
        "cifar10_vit_210k", "cifar10_efficientnet_210k", "cifar100_cnn_64k",
        "cifar100_convnext_210k", "cifar100_vit_210k", "cifar100_efficientnet_210k",
        "cifar100_coarse_cnn_64k",
    }  # fmt: skip
    assert expected <= set(MODELS), f"missing model configs: {sorted(expected - set(MODELS))}"
    assert set(LEGACY_NAMES) <= set(MODELS)
    assert FAMILY_CONFIGS <= set(MODEL_CONFIGS)


@pytest.mark.parametrize("name", MODELS)
def test_model_config_trains_a_step(name: str) -> None:
    """Build ``model=<name>``, run forward + backward on its intended input shape.

    The output has one logit per class of each head, the loss is finite, every parameter gets a
    gradient (no dead branches), and the parameter count is within 10% of the config's name.
    """
    model = build(name)
    shape, num_classes = dataset_of(name)
    heads = model.heads if model.multihead else {"label": num_classes}
    x, y = random_batch(shape, heads)

    model.train()
    out = model.net(x)
    if model.multihead:
        assert isinstance(out, dict) and list(out) == list(heads)
        assert {h: tuple(v.shape) for h, v in out.items()} == {h: (4, n) for h, n in heads.items()}
    else:
        assert isinstance(out, torch.Tensor) and out.shape == (4, num_classes)

    loss = model.model_step((x, y))[0]
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in model.net.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"

    size, stated = count(model.net), stated_size(name)
    assert abs(size - stated) <= 0.1 * stated, (
        f"{name} has {size:,} parameters, more than 10% away from the {stated:,} its name states"
    )


def test_simple_cnn_matches_the_classic_layout() -> None:
    """SimpleCNN 421K is the classic MNIST CNN; the multihead variant adds exactly two heads."""
    net = build("mnist_cnn_421k").net
    assert isinstance(net, SimpleCNN)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (3, 3)),
        (32, 64, (3, 3)),
    ]
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(3136, 128), (128, 10)]
    # The classic layout has 421,834 parameters (its stated size is 421,482).
    assert count(net) == 421_834

    multi = build("mnist_multihead_cnn_422k")
    assert multi.heads == {"digit": 10, "thickness": 5, "smoothness": 3}
    assert count(multi.net) - count(net) == (128 + 1) * (5 + 3)
    assert multi.loss_weights == {"digit": 1.0, "thickness": 0.5, "smoothness": 0.5}


def test_simple_cnn_depth_width_and_batch_norm_options() -> None:
    """Extra blocks pool again, two convolutions per block stack, batch norm can be left out."""
    net = SimpleCNN(
        in_channels=3,
        image_size=32,
        conv1_channels=8,
        conv2_channels=16,
        extra_channels=[32],
        convs_per_block=2,
        batch_norm=False,
        fc_hidden=24,
        pool_size=4,
    )
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (3, 8), (8, 8), (8, 16), (16, 16), (16, 32), (32, 32)
    ]  # fmt: skip
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 3  # 32 -> 16 -> 8 -> 4
    assert net.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 24)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    conv_params = sum(c.weight.numel() + c.bias.numel() for c in convs)
    assert count(net) == conv_params + (32 * 16 + 1) * 24 + (24 + 1) * 10

    # batch norm off removes exactly its affine parameters from the default network
    assert count(SimpleCNN()) - count(SimpleCNN(batch_norm=False)) == 2 * (32 + 64)

    with pytest.raises(ValueError, match="at least 16x16, got 8"):
        SimpleCNN(image_size=8, extra_channels=[64, 64])


def _relu_then_pool_forward(net: SimpleCNN, x: torch.Tensor) -> torch.Tensor:
    """The classic ``Conv -> [BN] -> ReLU -> MaxPool`` order, written out with the net's weights."""
    blocks = [m for m in net.features if isinstance(m, torch.nn.Sequential)]
    for block in blocks:
        for layer in block:
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):
                x = layer(x)
                if isinstance(layer, torch.nn.BatchNorm2d) or not any(
                    isinstance(m, torch.nn.BatchNorm2d) for m in block
                ):
                    x = torch.relu(x)
        x = torch.nn.functional.max_pool2d(x, 2)
    return net.head(net.features[len(blocks) :](x))  # pool, flatten, hidden layer


@pytest.mark.parametrize("batch_norm", [True, False])
def test_simple_cnn_pools_before_relu_without_changing_the_function(batch_norm: bool) -> None:
    """Pool-then-ReLU equals the classic ReLU-then-pool (they commute), state-dict keys unchanged."""
    torch.manual_seed(0)
    net = SimpleCNN(batch_norm=batch_norm, convs_per_block=2, dropout=0.0).eval()
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(net(x), _relu_then_pool_forward(net, x))
    keys = {k for k in net.state_dict() if "features.0." in k}
    second_conv = 3 if batch_norm else 2  # Conv, [BN], ReLU, Conv, ...
    expected = {"features.0.0.weight", "features.0.0.bias", f"features.0.{second_conv}.weight"}
    assert expected <= keys  # convs keep their indices: old checkpoints still load


def test_simple_cnn_norm_after_pool_input_crop_and_identity_pool() -> None:
    """BN after the pool normalizes the pooled map; input_crop equals cropping the data."""
    torch.manual_seed(0)
    net = SimpleCNN(norm_after_pool=True, input_crop=2, pool_size=6, dropout=0.0)
    block = net.features[0]
    kinds = [type(m).__name__ for m in block]
    assert kinds == ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU"]
    assert count(net) == count(SimpleCNN(pool_size=6))  # same parameters, other order

    x = torch.randn(8, 1, 28, 28)
    net(x)  # BN statistics on pooled maps: running mean moves
    assert not torch.allclose(block[2].running_mean, torch.zeros(32))
    net.eval()
    uncropped = SimpleCNN(norm_after_pool=True, image_size=24, pool_size=6, dropout=0.0)
    uncropped.load_state_dict(net.state_dict())
    uncropped.eval()
    torch.testing.assert_close(net(x), uncropped(x[..., 2:26, 2:26]))

    # 24 -> 12 -> 6: the adaptive pool is already at its size and passes the map through
    pool = net.features[2]
    maps = torch.randn(2, 64, 6, 6)
    assert pool(maps) is maps
    assert pool(torch.randn(2, 64, 12, 12)).shape == (2, 64, 6, 6)

    with pytest.raises(ValueError, match="input_crop=14"):
        SimpleCNN(input_crop=14)
    with pytest.raises(ValueError, match="at least 4x4, got 2 .image_size=28, input_crop=13"):
        SimpleCNN(input_crop=13)


def test_network_arguments_override_from_the_command_line() -> None:
    """The example ``model.net.conv1_channels=64 model.net.dropout=0.5`` takes effect."""
    net = build("mnist_cnn", "model.net.conv1_channels=64", "model.net.dropout=0.5").net
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    dropouts = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert convs[0].out_channels == 64 and convs[1].in_channels == 64
    assert [d.p for d in dropouts] == [0.5]


def test_short_names_resolve_to_their_models() -> None:
    """``model=mnist`` stays SimpleDenseNet 68K; the short names alias the sized configs."""
    assert isinstance(build("mnist").net, SimpleDenseNet)
    assert count(build("mnist").net) == 67_978  # its stated size is 68,048
    for alias, target in [
        ("mnist_cnn", "mnist_cnn_421k"),
        ("mnist_convnext_68k", "mnist_convnext_73k"),
    ]:
        assert compose_train(f"model={alias}").model == compose_train(f"model={target}").model


# One small preset per family: (component class, constructor arguments).
FAMILIES = {
    "sdn": (SimpleDenseNet, dict(lin1_size=16, lin2_size=16, lin3_size=16)),
    "cnn": (SimpleCNN, dict(conv1_channels=8, conv2_channels=16, fc_hidden=16)),
    "efficientnet": (
        SimpleEfficientNet,
        dict(width_mult=0.25, depth_mult=0.34, head_channels=64, num_stages=3),
    ),
    "vit": (VisionTransformer, dict(patch_size=4, embed_dim=16, depth=1, num_heads=2)),
    "convnext": (ConvNeXtV2, dict(depths=(1, 1, 1, 1), dims=(4, 8, 8, 16))),
}


def make_net(family: str, shape: tuple[int, int, int], **kwargs) -> torch.nn.Module:
    """A small network of ``family`` for images of ``shape``."""
    cls, preset = FAMILIES[family]
    if cls is SimpleDenseNet:
        heads = kwargs.pop("heads_config", None)
        return cls(
            input_shape=shape,
            output_size=kwargs.pop("num_classes", 10),
            heads_config=heads,
            **preset,
        )
    return cls(in_channels=shape[0], image_size=shape[1], **preset, **kwargs)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "sdn"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_one_class_serves_mnist_and_cifar(family: str, shape: tuple[int, int, int]) -> None:
    """Each component takes the input shape and class count as arguments."""
    net = make_net(family, shape, num_classes=7)
    features = net.forward_features(torch.randn(2, *shape))
    assert features.shape == (2, net.num_features)
    assert net(torch.randn(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_multihead_works_on_every_family(family: str) -> None:
    """``heads_config`` gives a dict of logits and the module trains every head."""
    heads = {"digit": 10, "thickness": 5, "smoothness": 3}
    net = make_net(family, (1, 28, 28), heads_config=heads)
    assert any(isinstance(m, MultiHead) for m in net.modules())
    model = ClassifierLitModule(
        net=net,
        optimizer=torch.optim.Adam,
        loss_weights={"digit": 1.0, "thickness": 0.5, "smoothness": 0.5},
    )
    assert model.heads == heads
    x, y = random_batch((1, 28, 28), heads)
    out = model.forward_heads(x)
    assert {h: tuple(v.shape) for h, v in out.items()} == {h: (4, n) for h, n in heads.items()}
    loss = model.model_step((x, y))[0]
    loss.backward()
    for name, head in net.head.heads.items():
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0, name


def compiled_matches_eager(family: str, backend: str = "inductor") -> None:
    """``compile: true`` compiles the net in ``setup('fit')``; outputs and gradients still flow."""
    torch.manual_seed(0)
    net = make_net(family, (1, 28, 28))
    # setup() calls net.compile(); pin the backend on this instance (inductor is the default).
    net.compile = functools.partial(net.compile, backend=backend)
    model = ClassifierLitModule(net=net, optimizer=torch.optim.Adam, compile=True)
    keys = set(model.state_dict())
    x, y = random_batch((1, 28, 28), {"label": 10})
    model.eval()
    with torch.no_grad():
        eager = model(x)
    model.setup("fit")
    assert net._compiled_call_impl is not None
    with torch.no_grad():
        compiled = model(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    model.train()
    loss = model.model_step((x, y))[0]
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    assert set(model.state_dict()) == keys  # compiled in place: checkpoints keep their keys


def test_compile_flag_compiles_the_network() -> None:
    """``compile: true`` traced by TorchDynamo + AOTAutograd (``aot_eager``: no C++ build, fast).

    The slow tests below run the real inductor backend on every family.
    """
    compiled_matches_eager("sdn", backend="aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_compile_every_family(family: str) -> None:
    """Every family works with ``compile: true`` and inductor (about a minute per model on CPU)."""
    compiled_matches_eager(family)


def test_helpful_errors_for_wrong_shapes() -> None:
    """Impossible input shapes fail at construction with the fix in the message."""
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        VisionTransformer(image_size=28, patch_size=8)
    with pytest.raises(ValueError, match="too small"):
        ConvNeXtV2(image_size=8)
    with pytest.raises(ValueError, match="one value per stage"):
        ConvNeXtV2(depths=(1, 1), dims=(8, 16, 32))


def test_vit_995_data_augments_training_batches_only() -> None:
    """data=mnist_vit_995 scales to [-1, 1] and augments only while training."""
    cfg = compose_train("experiment=mnist_vit_995")
    from hydra.utils import instantiate

    data = instantiate(cfg.data)
    t = data.transform
    assert t.mean.flatten().tolist() == [0.5] and t.std.flatten().tolist() == [0.5]
    assert (t.degrees, t.translate, t.scale) == (10.0, 0.1, (0.9, 1.1))
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    expected = images.float() / 127.5 - 1
    torch.testing.assert_close(t(images, train=False), expected)
    assert not torch.allclose(t(images, train=True), expected)
    assert not instantiate(cfg.data, augment=None).transform.augments  # null switches it off


@pytest.mark.parametrize(
    "experiment, model_config, epochs",
    [
        ("mnist_cnn", "mnist_cnn_421k", 2),
        ("mnist_convnext", "mnist_convnext_73k", 3),
        ("mnist_efficientnet", "mnist_efficientnet_210k", 5),
        ("mnist_vit", "mnist_vit_210k", 10),
        ("mnist_vit_995", "mnist_vit_210k", 200),
    ],
)
def test_experiments_compose(experiment: str, model_config: str, epochs: int) -> None:
    """Experiments fix the seed, tag the run and replace the plateau schedule by one-cycle."""
    cfg = compose_train(f"experiment={experiment}")
    assert cfg.seed is not None and cfg.tags and cfg.trainer.max_epochs == epochs
    assert cfg.model.net._target_ == compose_train(f"model={model_config}").model.net._target_
    scheduler = OmegaConf.to_container(cfg.model.scheduler, resolve=True)
    assert scheduler["_target_"].endswith("OneCycleLR") and "patience" not in scheduler
    assert scheduler["max_lr"] == cfg.model.optimizer.lr and cfg.model.scheduler_interval == "step"
    model = instantiate_model(cfg.model)
    if experiment == "mnist_vit_995":
        assert 189_000 <= count(model.net) <= 231_000
        assert model.criteria["label"].criterion.label_smoothing == 0.1


def test_architecture_table_counts_parameters(tmp_path: Path) -> None:
    """The docs table script (``--no-train``) reports the measured parameter counts."""
    import importlib.util

    path = CONFIG_DIR.parent / "benchmarks" / "scripts" / "architecture_table.py"
    spec = importlib.util.spec_from_file_location("architecture_table", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "table.md"
    table = script.main(
        ["--no-train", "--configs", "mnist_cnn_421k", "mnist_convnext_73k", "--output", str(out)]
    )
    assert "| SimpleCNN | `mnist_cnn_421k` | 421,834 | 1x28x28 |" in table
    assert "| ConvNeXt-V2 | `mnist_convnext_73k` | 73,402 | 1x28x28 |" in table
    written = out.read_text()
    assert written.startswith("# Architecture zoo") and written.strip().endswith(table)


def test_architecture_table_trains_and_reuses_saved_rows(tmp_path: Path, monkeypatch) -> None:
    """With ``--results``, measured rows are saved and a re-run reuses them instead of training."""
    import importlib.util
    import json

    path = CONFIG_DIR.parent / "benchmarks" / "scripts" / "architecture_table.py"
    spec = importlib.util.spec_from_file_location("architecture_table", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    results = tmp_path / "rows.json"
    argv = ["--epochs", "1", "--limit-train-batches", "5", "--configs", "mnist_sdn_8k"]
    argv += ["--results", str(results), "--", "data.train_val_test_split=[2000,500,1000]"]
    table = script.main(argv)
    (row,) = json.loads(results.read_text())["rows"]
    assert row["config"] == "mnist_sdn_8k" and row["epochs"] == 1
    assert 0.0 < row["test_acc"] <= 1.0 and row["images_per_s"] > 0
    assert f"{100 * row['test_acc']:.2f}%" in table

    def must_not_train(*args, **kwargs):
        raise AssertionError("a saved row was measured again")

    monkeypatch.setattr(script, "train_and_test", must_not_train)
    assert script.main(argv) == table
    with pytest.raises(AssertionError, match="measured again"):  # another recipe: measured anew
        script.main([*argv[:1], "2", *argv[2:]])


def test_architecture_table_lists_skipped_configs_untrained(monkeypatch) -> None:
    """``--skip`` keeps a config in the table, marked as not measured, without training it."""
    import importlib.util

    path = CONFIG_DIR.parent / "benchmarks" / "scripts" / "architecture_table.py"
    spec = importlib.util.spec_from_file_location("architecture_table", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "train_and_test", lambda *a, **k: pytest.fail("trained"))
    table = script.main(["--epochs", "1", "--configs", "mnist_cnn_8k", "--skip", "mnist_cnn_8k"])
    assert "| SimpleCNN | `mnist_cnn_8k` |" in table and "not measured" in table


def test_architecture_table_counts_presets_on_mnist_and_cifar(tmp_path: Path, monkeypatch) -> None:
    """``--presets`` counts each family config's presets on both shapes, as committed."""
    import importlib.util
    import json

    path = CONFIG_DIR.parent / "benchmarks" / "scripts" / "architecture_table.py"
    spec = importlib.util.spec_from_file_location("architecture_table", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "FAMILY_CONFIGS", {"sdn": "SimpleDenseNet", "vit": "ViT"})
    out, counts = tmp_path / "presets.md", tmp_path / "presets.json"
    table = script.main(["--presets", "--output", str(out), "--counts", str(counts)])
    assert "| SimpleDenseNet | `model=sdn` | `sdn_68k` (default) | 67,978 | 214,410 |" in table
    assert (
        "| ViT | `model=vit` | `vit_210k` | 205,834 | n/a (image_size 32 is not divisible" in table
    )
    assert out.read_text().startswith("# Model size presets") and table in out.read_text()
    rows = json.loads(counts.read_text())["rows"]
    committed = CONFIG_DIR.parent / "benchmarks" / "results" / "model_presets.json"
    expected = [
        r for r in json.loads(committed.read_text())["rows"] if r["config"] in ("sdn", "vit")
    ]
    assert rows == expected
