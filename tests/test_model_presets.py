"""One config per architecture family, sizes as presets, dataset-prefixed names as thin aliases.

``model=<family>`` leaves the network's shape keys to the data (``src/models/build.py`` fills
them), ``model/net=<preset>`` picks a size from ``configs/model/net/``, and every
dataset-prefixed name (``mnist_cnn_421k``, ``cifar10_vit_210k``, ...) is a family, a preset and
that dataset's shape. Configs are composed through ``train.yaml`` as ``src/train.py`` does.
"""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from src.models.build import SHAPE_RULES, fit_model_config, instantiate_model
from src.models.classifier_module import METADATA_KEY
from src.utils.checks import check_model_matches_data
from tests.conftest import CONFIGS, ROOT, _tune_for_tests, compose_config
from tests.helpers.cifar_files import write_cifar10
from tests.test_architectures import FAMILY_CONFIGS, MODELS, count, dataset_of

PRESET_DIR = Path(CONFIGS, "model", "net")
PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
#: What a datamodule reports about itself, for the two shapes every preset is checked on.
DATA = {
    "MNIST": SimpleNamespace(input_shape=(1, 28, 28), heads={"label": 10}),
    "CIFAR-10": SimpleNamespace(input_shape=(3, 32, 32), heads={"label": 10}),
}
#: The measured counts quoted in the README (``architecture_table.py --presets``).
COUNTS = ROOT / "benchmarks" / "results" / "model_presets.json"
#: First line of every preset: ``# <Family> preset: 421,834 parameters on MNIST (1x28x28, ...``.
HEADER = re.compile(r"^# .+ preset: ([\d,]+) parameters on (MNIST|CIFAR-10) \(")


def family_of(preset: str) -> str:
    """``cnn_421k`` -> ``cnn``, ``vit_patch4_210k`` -> ``vit``."""
    return preset.split("_")[0]


def family_with(preset: str, *overrides: str):
    """``model=<family> model/net=<preset>`` composed through ``train.yaml``."""
    return compose_config(
        "train.yaml", [f"model={family_of(preset)}", f"model/net={preset}", *overrides]
    )


def measured_counts() -> dict[str, dict[str, int | None]]:
    """``{preset: {dataset: parameters}}`` from the committed results file."""
    rows = json.loads(COUNTS.read_text())["rows"]
    return {r["preset"]: {d: r[d] for d in DATA} for r in rows}


def test_presets_belong_to_a_family_hold_no_shape_and_state_their_size() -> None:
    """A preset is architecture only; its header names its count on the data it was sized on."""
    assert {family_of(p) for p in PRESETS} == FAMILY_CONFIGS
    counts = measured_counts()
    assert set(counts) == set(PRESETS), "re-run architecture_table.py --presets (README table)"
    for preset in PRESETS:
        text = (PRESET_DIR / f"{preset}.yaml").read_text()
        keys = set(OmegaConf.create(text)) - {"defaults"}
        assert not keys & set(SHAPE_RULES), f"net/{preset}.yaml sets shape keys"
        header = HEADER.match(text)
        assert header, f"net/{preset}.yaml: first line must state its size and dataset"
        stated, dataset = int(header[1].replace(",", "")), header[2]
        assert counts[preset][dataset] == stated, f"net/{preset}.yaml states {stated:,}"


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_family_config_leaves_the_shape_to_the_data(family: str) -> None:
    cfg = compose_config("train.yaml", [f"model={family}"])
    shape_keys = {k: v for k, v in cfg.model.net.items() if k in SHAPE_RULES}
    assert shape_keys and set(shape_keys.values()) == {None}
    assert family_of(cfg.hydra.runtime.choices["model/net"]) == family  # a preset by default


@pytest.mark.parametrize("data", list(DATA))
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_fits_mnist_and_cifar(preset: str, data: str) -> None:
    """Fitted to the data's shape, the family config builds with the measured parameter count
    and gives one logit per class; a 7x7-patch ViT on 32 px fails with the fix in the message."""
    fitted = fit_model_config(family_with(preset).model, DATA[data])
    channels, height, _ = DATA[data].input_shape
    net_cfg = fitted.net
    assert net_cfg.get("in_channels", channels) == channels
    assert net_cfg.get("image_size", height) == height
    expected = measured_counts()[preset][data]
    if expected is None:
        with pytest.raises(InstantiationException, match="not divisible by patch_size 7; use"):
            instantiate_model(fitted)
        assert preset.startswith("vit_") and data == "CIFAR-10"
        return
    model = instantiate_model(fitted)
    assert count(model.net) == expected
    assert model.net.eval()(torch.zeros(2, *DATA[data].input_shape)).shape == (2, 10)


def shape_of_alias(name: str, net_cfg) -> SimpleNamespace:
    """The datamodule an alias was made for: its dataset's shape, its heads if it has several."""
    shape, classes = dataset_of(name)
    heads = dict(net_cfg.heads_config) if net_cfg.get("heads_config") else {"label": classes}
    return SimpleNamespace(input_shape=shape, heads=heads)


@pytest.mark.parametrize("name", MODELS)
def test_alias_is_a_family_a_preset_and_its_dataset_shape(name: str) -> None:
    """Each dataset-prefixed name extends a family config directly (never another alias) and
    equals ``model=<family> model/net=<preset>`` fitted to its dataset: same network, same count."""
    defaults = OmegaConf.load(Path(CONFIGS, "model", f"{name}.yaml")).defaults
    assert defaults[0] in FAMILY_CONFIGS, f"model/{name}.yaml must extend a family config"
    alias = compose_config("train.yaml", [f"model={name}"])
    preset = alias.hydra.runtime.choices["model/net"]
    assert family_of(preset) == defaults[0]

    fitted = fit_model_config(family_with(preset).model, shape_of_alias(name, alias.model.net))
    ours = OmegaConf.to_container(alias.model.net)
    theirs = OmegaConf.to_container(fitted.net)
    for key in SHAPE_RULES:  # the alias states its shape; fitting fills the same values
        if theirs.get(key) is not None:
            assert ours[key] == theirs[key], (name, key)
    arch = {k: v for k, v in ours.items() if k not in SHAPE_RULES}
    assert arch == {k: v for k, v in theirs.items() if k not in SHAPE_RULES}
    assert count(instantiate_model(alias.model).net) == count(instantiate_model(fitted).net)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.net.in_channels=3", r"fails on a batch of the data's images \(1, 28, 28\)"),
        ("model.net.num_classes=7", "predicts 7 classes but the data has 10"),
    ],
)
def test_user_shape_that_contradicts_the_data_is_reported(override: str, message: str) -> None:
    """A shape key set by the user is kept by the fit, then reported before any training."""
    cfg = family_with("cnn_8k", override)
    datamodule = instantiate(cfg.data)  # MNIST: nothing is read to know its shape
    fitted = fit_model_config(cfg.model, datamodule)
    key, value = override.removeprefix("model.net.").split("=")
    assert fitted.net[key] == int(value) and fitted.net.image_size == 28
    with pytest.raises(ValueError, match="Model and data do not match") as err:
        check_model_matches_data(instantiate_model(fitted), datamodule)
    assert re.search(message, str(err.value))


def test_family_config_with_a_preset_trains_on_mnist(tmp_path: Path) -> None:
    """``model=cnn model/net=cnn_8k``: shapes filled from MNIST, a few batches trained, the
    loss goes down, and the checkpoint keeps the fitted config (predict/export rebuild from it)."""
    from src.train import train

    cfg = family_with(
        "cnn_8k",
        "data.train_val_test_split=[1024,128,256]",
        "data.batch_size=64",
        "seed=0",
        "model.optimizer.lr=0.005",
    )
    _tune_for_tests(cfg, tmp_path)
    with open_dict(cfg):
        cfg.trainer.max_epochs = 2
        cfg.trainer.limit_val_batches = 2
        cfg.trainer.limit_test_batches = 2
        cfg.trainer.log_every_n_steps = 1
    HydraConfig().set_config(cfg)
    metrics, objects = train(cfg)
    assert count(objects["model"].net) == measured_counts()["cnn_8k"]["MNIST"]
    # an untrained 10-class network starts near ln(10) = 2.30
    assert metrics["train/loss"] < 2.0 and metrics["test/loss"] < 2.0, metrics
    assert metrics["test/acc"] > 0.3, metrics  # chance: 0.1
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    net = ckpt[METADATA_KEY]["model"]["net"]
    assert (net["in_channels"], net["image_size"], net["num_classes"]) == (1, 28, 10)


@pytest.mark.parametrize("family", ["cnn", "vit"])
def test_family_config_runs_on_cifar10_files(family: str, tmp_path: Path) -> None:
    """``model=<family> data=cifar10`` with the default preset: one step on tiny CIFAR-10 files
    in the official format; the network is built for 3x32x32 images."""
    from src.train import train

    write_cifar10(tmp_path, n_train=40, n_test=16)
    cfg = compose_config(
        "train.yaml",
        [f"model={family}", "data=cifar10", f"data.data_dir={tmp_path}"]
        + [
            "data.train_val_test_split=[32,8,16]",
            "data.batch_size=8",
            "+trainer.fast_dev_run=true",
        ],
    )
    _tune_for_tests(cfg, tmp_path)
    HydraConfig().set_config(cfg)
    metrics, objects = train(cfg)
    net = objects["model"].model_config["net"]
    assert (net["in_channels"], net["image_size"], net["num_classes"]) == (3, 32, 10)
    assert torch.isfinite(torch.as_tensor(metrics["test/loss"]))
