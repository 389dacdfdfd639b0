"""Multihead classification: label rules, caching, every backbone, weighted losses, metrics, eval.

The MNIST attribute labels are checked on the real images; the end-to-end runs train the
``mnist_multihead_cnn`` experiment on small real-MNIST splits.
"""

import functools
import importlib
import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import nn

from src.data.components import mnist_attributes as mh
from src.data.components.mnist_source import load_mnist, raw_dir
from src.data.mnist_datamodule import MNISTDataModule
from src.eval import evaluate
from src.models.build import instantiate_model
from src.models.classifier_module import ClassifierLitModule
from src.models.components.heads import MultiHead
from src.models.components.simple_cnn import SimpleCNN
from src.train import train
from tests.conftest import ROOT, _tune_for_tests, compose_config

MNIST_HEADS = {"digit": 10, "thickness": 5, "smoothness": 3}
DATA_DIR = ROOT / "data"
COMPONENTS = ROOT / "src" / "models" / "components"
#: Component files that hold shared pieces rather than backbones.
NOT_BACKBONES = {
    "__init__",
    "heads",
    "losses",
    "schedulers",
    "weight_files",
}  # files that hold no network


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def mnist_test_images() -> tuple[torch.Tensor, torch.Tensor]:
    """The official MNIST test split (uint8 images, digits)."""
    return load_mnist(raw_dir(DATA_DIR), train=False)


def stroke_image(width: int, length: int = 16, size: int = 28) -> torch.Tensor:
    """A vertical bar ``width`` pixels wide and ``length`` long, uint8 ``(1, size, size)``."""
    image = torch.zeros(1, size, size, dtype=torch.uint8)
    top, left = (size - length) // 2, (size - width) // 2
    image[0, top : top + length, left : left + width] = 255
    return image


def run_training(cfg: DictConfig) -> dict[str, float]:
    """Train (and test) with ``cfg``; the metric dict as floats."""
    HydraConfig().set_config(cfg)
    metrics, _ = train(cfg)
    return {k: float(v) for k, v in metrics.items()}


def multihead_cfg(tmp_path: Path, split: str, *overrides: str) -> DictConfig:
    """The ``mnist_multihead_cnn`` experiment on a real-MNIST subset, writing into ``tmp_path``."""
    cfg = compose_config(
        "train.yaml",
        ["experiment=mnist_multihead_cnn", f"data.train_val_test_split={split}", *overrides],
    )
    _tune_for_tests(cfg, tmp_path)
    with open_dict(cfg):
        cfg.callbacks.rich_progress_bar = None
    return cfg


def backbone_classes() -> list[tuple[str, type[nn.Module]]]:
    """``(file, class)`` of every network class taking ``heads_config`` in each component file."""
    found = []
    for path in sorted(COMPONENTS.glob("*.py")):
        if path.stem in NOT_BACKBONES:
            continue
        module = importlib.import_module(f"src.models.components.{path.stem}")
        classes = [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if cls.__module__ == module.__name__
            and issubclass(cls, nn.Module)
            and "heads_config" in inspect.signature(cls).parameters
        ]
        found += [(path.stem, cls) for cls in classes] or [(path.stem, None)]
    return found


# -------------------------------------------------------------- label rules
def test_smoothness_follows_the_digit_table() -> None:
    """0,6,8,9 smooth (2); 2,3,5 medium (1); 1,4,7 angular (0)."""
    labels = mh.smoothness_from_digit(torch.arange(10))
    assert labels.tolist() == [2, 0, 1, 1, 0, 1, 2, 0, 2, 2]
    assert [mh.SMOOTHNESS_NAMES[s] for s in labels[[0, 1, 2]]] == ["smooth", "angular", "medium"]


def test_skeleton_is_one_pixel_wide_and_keeps_the_length() -> None:
    widths = (1, 3, 5)
    bars = torch.cat([stroke_image(w, length=16) for w in widths])  # (3, 28, 28)
    skeleton = mh.skeletonize(bars >= mh.INK_THRESHOLD)
    assert (skeleton <= (bars > 0)).all()  # a skeleton lies inside its stroke
    for bar, width in zip(skeleton, widths, strict=True):
        assert bar.sum(dim=1).max() == 1  # one pixel per row
        assert 16 - width <= bar.sum() <= 16  # the length, less about (width - 1) / 2 per end
    assert mh.count_endpoints(skeleton).tolist() == [2, 2, 2]


def test_stroke_width_measures_bars() -> None:
    """Bars 1 to 6 pixels wide (any length) and a ring 3 wide measure about their width."""
    bars = [stroke_image(w, length) for w in range(1, 7) for length in (8, 20)]
    widths = mh.stroke_width(torch.stack(bars))
    assert widths.tolist() == pytest.approx(
        [w for w in range(1, 7) for _ in (8, 20)], rel=0.1, abs=0.25
    )
    ring = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    ring[..., 5:20, 5:20] = 255
    ring[..., 8:17, 8:17] = 0
    assert mh.stroke_width(ring).item() == pytest.approx(3.0)


def test_dilating_real_digits_increases_thickness(
    mnist_test_images: tuple[torch.Tensor, torch.Tensor],
) -> None:
    images = mnist_test_images[0][:500]
    dilated = F.max_pool2d(images.float(), 3, stride=1, padding=1).to(torch.uint8)
    before, after = mh.stroke_width(images), mh.stroke_width(dilated)
    assert (after > before).float().mean() > 0.99
    thresholds = mh.quantile_thresholds(before, 5)
    assert (mh.bucketize(after, thresholds) >= mh.bucketize(before, thresholds)).all()


def test_thresholds_at_training_quantiles_split_the_training_set_evenly() -> None:
    """On (a subset of) the real training images each of the 5 classes holds ~20%."""
    images, _ = load_mnist(raw_dir(DATA_DIR), train=True)
    widths = mh.stroke_width(images[:3000])
    labels = mh.bucketize(widths, mh.quantile_thresholds(widths, 5))
    shares = torch.bincount(labels, minlength=5) / len(labels)
    assert shares.tolist() == pytest.approx([0.2] * 5, abs=0.005)


@functools.cache
def mnist_slices() -> dict[bool, tuple[torch.Tensor, torch.Tensor]]:
    """The first 600 training and 200 test images of real MNIST, read once."""
    folder = raw_dir(DATA_DIR)
    return {
        train: tuple(t[:n] for t in load_mnist(folder, train))
        for train, n in ((True, 600), (False, 200))
    }


def read_mnist_slice(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``read_split`` for :class:`MNISTAttributeLabels` over the small real-MNIST slices."""
    return mnist_slices()[train]


def test_test_labels_use_the_training_thresholds(tmp_path: Path) -> None:
    labeler = mh.MNISTAttributeLabels(tmp_path, read_mnist_slice)
    test_images, test_digits = labeler.read_split(False)
    labels = labeler.labels(False, test_images, test_digits, ["thickness", "digit"])
    assert list(labels) == ["thickness", "digit"]
    train_widths = mh.stroke_width(labeler.read_split(True)[0])
    expected = mh.bucketize(mh.stroke_width(test_images), mh.quantile_thresholds(train_widths, 5))
    assert torch.equal(labels["thickness"], expected)
    assert torch.equal(labels["digit"], test_digits)


def test_stroke_widths_are_computed_once_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed: list[int] = []
    original = mh.stroke_width
    monkeypatch.setattr(mh, "stroke_width", lambda x: computed.append(len(x)) or original(x))

    def labels_of(labeler: mh.MNISTAttributeLabels) -> dict[str, torch.Tensor]:
        images, digits = labeler.read_split(False)
        return labeler.labels(False, images, digits, ["digit", "thickness", "smoothness"])

    first = labels_of(mh.MNISTAttributeLabels(tmp_path, read_mnist_slice))
    assert sorted(computed) == [200, 600]  # test split, then the training split for thresholds
    assert {p.name for p in tmp_path.iterdir()} == {
        f"stroke_width_{mh.LABEL_VERSION}_train.pt",
        f"stroke_width_{mh.LABEL_VERSION}_test.pt",
    }
    # A new labeler (a new run) reads the cache: nothing is recomputed, labels are identical.
    second = labels_of(mh.MNISTAttributeLabels(tmp_path, read_mnist_slice))
    assert sorted(computed) == [200, 600]
    assert all(torch.equal(first[h], second[h]) for h in first)

    # Other images or a new label version make the cache stale.
    mh.cached_stroke_widths(torch.zeros(3, 1, 28, 28, dtype=torch.uint8), tmp_path / "x.pt")
    mh.cached_stroke_widths(torch.ones(3, 1, 28, 28, dtype=torch.uint8), tmp_path / "x.pt")
    assert computed[-2:] == [3, 3]
    monkeypatch.setattr(mh, "LABEL_VERSION", "another-rule")
    labels_of(mh.MNISTAttributeLabels(tmp_path, read_mnist_slice))
    assert len(computed) == 6


def test_datamodule_heads_option() -> None:
    assert MNISTDataModule(data_dir=str(DATA_DIR)).heads == {"label": 10}
    dm = MNISTDataModule(data_dir=str(DATA_DIR), heads=["digit", "thickness", "smoothness"])
    assert dm.heads == MNIST_HEADS and dm.num_classes == 10
    assert MNISTDataModule(heads=["smoothness"], thickness_classes=3).heads == {"smoothness": 3}
    with pytest.raises(ValueError, match="choose from"):
        MNISTDataModule(heads=["digit", "colour"])


def test_datamodule_yields_label_dicts() -> None:
    dm = MNISTDataModule(
        data_dir=str(DATA_DIR),
        heads=["digit", "thickness", "smoothness"],
        train_val_test_split=[1000, 200, 300],
    )
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and list(y) == list(MNIST_HEADS)
    assert torch.equal(y["smoothness"], mh.smoothness_from_digit(y["digit"]))
    for head, n in MNIST_HEADS.items():
        assert y[head].dtype == torch.long and 0 <= y[head].min() and y[head].max() < n


# --------------------------------------------------------- every backbone
@pytest.mark.parametrize(
    ("file", "cls"), backbone_classes(), ids=lambda v: getattr(v, "__name__", v)
)
def test_every_backbone_returns_head_dicts_through_the_shared_module(
    file: str, cls: type[nn.Module] | None
) -> None:
    assert cls is not None, f"src/models/components/{file}.py has no network taking heads_config"
    # Networks by name need the name; the MNIST shape is given as the builder would fill it.
    by_name = {"TimmNet": {"model_name": "resnet18"}, "TorchvisionNet": {"name": "resnet18"}}
    if cls.__name__ in by_name:
        cls = functools.partial(
            cls, **by_name[cls.__name__], in_channels=1, image_size=28, num_classes=10
        )
    net = cls(heads_config=MNIST_HEADS)
    heads_modules = [m for m in net.modules() if isinstance(m, MultiHead)]
    assert heads_modules == [net.head], "the one shared MultiHead must be the network's `head`"
    out = net(torch.rand(3, 1, 28, 28))
    assert list(out) == list(MNIST_HEADS)
    assert {h: tuple(v.shape) for h, v in out.items()} == {
        h: (3, n) for h, n in MNIST_HEADS.items()
    }
    assert net.head.heads["digit"].in_features == net.num_features
    single = cls()
    assert isinstance(single(torch.rand(3, 1, 28, 28)), torch.Tensor)


# ------------------------------------------------------------ losses
def make_module(**kwargs) -> ClassifierLitModule:
    return ClassifierLitModule(
        net=SimpleCNN(heads_config=MNIST_HEADS),
        optimizer=lambda params: torch.optim.Adam(params),
        **kwargs,
    )


def random_batch(size: int = 8) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    labels = {h: torch.randint(0, n, (size,)) for h, n in MNIST_HEADS.items()}
    return torch.randn(size, 1, 28, 28), labels


def test_total_loss_is_the_weighted_sum_of_head_losses() -> None:
    model = make_module(
        criteria={"thickness": {"_target_": "torch.nn.CrossEntropyLoss", "label_smoothing": 0.2}},
        loss_weights={"digit": 2.0, "thickness": 0.5},  # smoothness: default 1.0
    ).eval()
    assert model.loss_weights == {"digit": 2.0, "thickness": 0.5, "smoothness": 1.0}
    x, y = random_batch()
    total, losses, logits, _ = model.model_step((x, y))
    expected = {
        "digit": F.cross_entropy(logits["digit"], y["digit"]),
        "thickness": F.cross_entropy(logits["thickness"], y["thickness"], label_smoothing=0.2),
        "smoothness": F.cross_entropy(logits["smoothness"], y["smoothness"]),
    }
    for head in MNIST_HEADS:
        torch.testing.assert_close(losses[head], expected[head])
    torch.testing.assert_close(
        total, 2.0 * expected["digit"] + 0.5 * expected["thickness"] + expected["smoothness"]
    )
    total.backward()
    assert all(p.grad is not None for p in model.net.head.parameters())


@pytest.mark.parametrize("what", ["loss_weights", "criteria"])
def test_unknown_head_names_are_a_clear_error(what: str) -> None:
    value = {"digits": 1.0} if what == "loss_weights" else {"digits": nn.CrossEntropyLoss()}
    with pytest.raises(ValueError, match=r"model\.\w+ names unknown head\(s\) \['digits'\]"):
        make_module(**{what: value})


def test_loss_weights_override_from_the_command_line() -> None:
    cfg = compose_config(
        "train.yaml",
        ["experiment=mnist_multihead_cnn", "model.loss_weights.digit=2.0"],
    )
    model = instantiate_model(cfg.model)
    assert model.loss_weights == {"digit": 2.0, "thickness": 0.5, "smoothness": 0.5}


# ------------------------------------------------------ experiment configs
@pytest.mark.parametrize(
    ("experiment", "heads"),
    [
        ("mnist_multihead_cnn", MNIST_HEADS),
        ("multihead_mnist", MNIST_HEADS),
        ("cifar10_multihead_cnn", {"class": 10, "kind": 2}),
        ("cifar100_multihead_cnn", {"fine": 100, "coarse": 20}),
    ],
)
def test_experiment_heads_match_their_data(experiment: str, heads: dict[str, int]) -> None:
    cfg = compose_config("train.yaml", [f"experiment={experiment}"])
    model = instantiate_model(cfg.model)
    datamodule = instantiate(cfg.data)
    assert model.heads == heads == datamodule.heads
    assert set(cfg.model.loss_weights) == set(heads)
    primary = next(iter(heads))
    assert cfg.callbacks.model_checkpoint.monitor == f"val/{primary}_acc"
    assert cfg.seed is not None and "multihead" in cfg.tags


@pytest.mark.parametrize(
    ("experiment", "writer", "split"),
    [("cifar10_multihead_cnn", "write_cifar10", "[40,10,20]"),
     ("cifar100_multihead_cnn", "write_cifar100", "[80,20,50]")],
)  # fmt: skip
def test_cifar_multihead_experiments_run(
    experiment: str, writer: str, split: str, tmp_path: Path
) -> None:
    """One step of each CIFAR multihead experiment on tiny files in the official format."""
    from tests.helpers import cifar_files

    getattr(cifar_files, writer)(tmp_path / "data")
    cfg = compose_config(
        "train.yaml",
        [f"experiment={experiment}", f"data.train_val_test_split={split}", "data.download=false"],
    )
    _tune_for_tests(cfg, tmp_path)
    with open_dict(cfg):
        cfg.data.data_dir = str(tmp_path / "data")
        cfg.callbacks.rich_progress_bar = None
        cfg.trainer.fast_dev_run = True
    metrics = run_training(cfg)
    heads = list(cfg.model.net.heads_config)
    for stage in ("train", "val", "test"):
        assert {f"{stage}/{h}_acc" for h in heads} <= set(metrics), metrics


# ----------------------------------------------- training, metrics and eval
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, float], Path]:
    """One short multihead run on real MNIST: its metrics and output folder."""
    tmp_path = tmp_path_factory.mktemp("multihead_run")
    cfg = multihead_cfg(tmp_path, "[1000,500,500]", "seed=0")
    metrics = run_training(cfg)
    return metrics, tmp_path


def test_metrics_are_logged_per_head(trained_run: tuple[dict[str, float], Path]) -> None:
    metrics, _ = trained_run
    expected = {"train/loss", "val/loss", "test/loss", "val/acc_best"}
    for stage in ("train", "val", "test"):
        expected |= {f"{stage}/{h}_{kind}" for h in MNIST_HEADS for kind in ("acc", "loss")}
    assert expected <= set(metrics), sorted(expected - set(metrics))
    assert "val/acc" not in metrics and "test/acc" not in metrics
    # The total is the weighted sum (1.0, 0.5, 0.5) of the per-head epoch means.
    for stage in ("val", "test"):
        weighted = (
            metrics[f"{stage}/digit_loss"]
            + 0.5 * metrics[f"{stage}/thickness_loss"]
            + 0.5 * metrics[f"{stage}/smoothness_loss"]
        )
        assert metrics[f"{stage}/loss"] == pytest.approx(weighted, rel=1e-5)
    # val/acc_best follows the primary (digit) head; one epoch, so it is that epoch's value.
    assert metrics["val/acc_best"] == pytest.approx(metrics["val/digit_acc"])


def test_multihead_checkpoint_evaluates_like_training(
    trained_run: tuple[dict[str, float], Path], tmp_path: Path
) -> None:
    metrics, run_dir = trained_run
    best = run_dir / "checkpoints" / "epoch_000.ckpt"
    checkpoint = torch.load(best, weights_only=True)
    assert checkpoint["hyper_parameters"]["loss_weights"] == {
        "digit": 1.0,
        "thickness": 0.5,
        "smoothness": 0.5,
    }
    assert checkpoint["datamodule_hyper_parameters"]["heads"] == list(MNIST_HEADS)

    cfg = compose_config(
        "eval.yaml",
        [
            "model=mnist_multihead_cnn_422k",
            "data=multihead_mnist",
            "data.train_val_test_split=[1000,500,500]",
            f"ckpt_path={best}",
        ],
    )
    _tune_for_tests(cfg, tmp_path)
    HydraConfig().set_config(cfg)
    eval_metrics, _ = evaluate(cfg)
    for key in [k for k in metrics if k.startswith("test/")]:
        assert float(eval_metrics[key]) == pytest.approx(metrics[key], rel=1e-5), key


@pytest.mark.slow
def test_every_head_beats_its_majority_baseline_on_real_mnist(tmp_path: Path) -> None:
    """One epoch on 10,000 real images: each head beats always guessing its commonest class,
    and thickness beats the best guess from the digit alone (it is not a relabelled digit)."""
    cfg = multihead_cfg(tmp_path, "[10000,2000,10000]", "seed=0", "trainer.max_epochs=1")
    metrics = run_training(cfg)

    dm = MNISTDataModule(data_dir=str(DATA_DIR), heads=list(MNIST_HEADS))
    _, train_labels = dm.load_split(train=True)
    _, test_labels = dm.load_split(train=False)
    for head, n in MNIST_HEADS.items():
        majority = torch.bincount(test_labels[head], minlength=n).max() / len(test_labels[head])
        assert metrics[f"test/{head}_acc"] > majority + 0.1, (head, metrics, majority)
    # The most common thickness of each digit (from training labels), scored on the test set.
    by_digit = torch.stack(
        [
            torch.bincount(train_labels["thickness"][train_labels["digit"] == d], minlength=5)
            for d in range(10)
        ]
    ).argmax(dim=1)
    digit_only = (by_digit[test_labels["digit"]] == test_labels["thickness"]).float().mean()
    assert metrics["test/thickness_acc"] > digit_only + 0.1, (metrics, digit_only)
    assert metrics["test/digit_acc"] > 0.9  # 96.5 % measured
