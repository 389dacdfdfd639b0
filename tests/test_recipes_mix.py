"""MixUp/CutMix (``model.mix``) and per-image augmentation policies (``data.augment``)."""

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from torch import nn

from src.data.components.transforms import BatchTransform, per_sample_transform
from src.models.classifier_module import ClassifierLitModule
from src.models.components.heads import MultiHead
from src.models.components.losses import UnsupportedLossError, build_mix, mix_batch
from tests.test_resume import _interrupt_and_resume

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
BOTH = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}


def _module(
    mix: dict | None, criterion: dict | None = None, classes: int = 5
) -> ClassifierLitModule:
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, classes))
    return ClassifierLitModule(
        net=net,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        criterion=criterion,
        mix=mix,
    )


def _batch(n: int = 16, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=generator), torch.arange(n) % classes


# ----------------------------------------------------------------- MixUp / CutMix
@pytest.mark.parametrize(
    "mix", [{"mixup_alpha": 0.8}, {"cutmix_alpha": 1.0}, BOTH], ids=["mixup", "cutmix", "both"]
)
def test_mixed_targets_are_soft_and_sum_to_one(mix: dict) -> None:
    torch.manual_seed(0)
    x, y = _batch(15)  # 15 images, 5 classes: neighbours always differ in label
    mixed_x, soft = mix_batch(build_mix(mix), x, {"label": y}, {"label": 5})
    target = soft["label"]
    assert mixed_x.shape == x.shape and target.shape == (15, 5)
    torch.testing.assert_close(target.sum(1), torch.ones(15))
    # Each image is a mix of itself and its neighbour: both labels carry weight.
    assert (target.max(1).values < 1).all()
    assert torch.all(target.gather(1, y[:, None]) > 0)
    assert torch.all(target.gather(1, y.roll(1)[:, None]) > 0)
    assert not torch.equal(mixed_x, x)


def test_multihead_targets_share_pairing_and_weight() -> None:
    torch.manual_seed(1)
    y = {"a": torch.arange(8) % 4, "b": torch.arange(8) % 3}
    _, soft = mix_batch(
        build_mix({"mixup_alpha": 1.0}), torch.randn(8, 1, 4, 4), y, {"a": 4, "b": 3}
    )
    assert soft["a"].shape == (8, 4) and soft["b"].shape == (8, 3)
    # The weight of each image's own label is the same lambda in both heads.
    own_a, own_b = soft["a"].gather(1, y["a"][:, None]), soft["b"].gather(1, y["b"][:, None])
    torch.testing.assert_close(own_a, own_b)
    assert own_a.unique().numel() == 1 and 0 < own_a[0] < 1


def test_loss_uses_soft_targets_accuracy_the_hard_labels() -> None:
    module = _module(BOTH)
    x, y = _batch()
    torch.manual_seed(3)
    total, losses, logits, targets = module.model_step((x, y), mix=True)
    assert torch.equal(targets["label"], y)  # what the accuracy is measured against
    torch.manual_seed(3)
    mixed_x, soft = mix_batch(module.mixer, x, {"label": y}, module.heads)
    expected = nn.functional.cross_entropy(module.net(mixed_x), soft["label"])
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(logits["label"], module.net(mixed_x))
    assert not torch.allclose(total, nn.functional.cross_entropy(module.net(x), y))
    # Validation and test steps are never mixed.
    plain, *_ = module.model_step((x, y))
    torch.testing.assert_close(plain, nn.functional.cross_entropy(module.net(x), y))


def test_mixed_training_loss_goes_down() -> None:
    torch.manual_seed(0)
    module = _module({"mixup_alpha": 0.4})
    optimizer = torch.optim.SGD(module.parameters(), lr=0.2)
    x, y = _batch(64)
    first = None
    for _ in range(40):
        loss = module.model_step((x, y), mix=True)[0]
        first = first if first is not None else float(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.8 * first


def test_losses_without_soft_targets_fail_early() -> None:
    with pytest.raises(UnsupportedLossError, match=r"model\.criterion is NLLLoss.*model\.mix=null"):
        _module(BOTH, criterion={"_target_": "torch.nn.NLLLoss"})
    # One-hot losses take the probabilities as they are.
    module = _module(BOTH, criterion={"_target_": "torch.nn.BCEWithLogitsLoss"})
    x, y = _batch()
    assert module.model_step((x, y), mix=True)[0].ndim == 0


@pytest.mark.parametrize(
    ("mix", "message"),
    [({"mixup": 0.8}, r"unknown key\(s\) \['mixup'\]"), ({"cutmix_alpha": -1}, "cutmix_alpha=-1")],
)
def test_bad_mix_config_names_the_key(mix: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_mix(mix)


def test_mix_off_by_default_and_for_zero_alphas() -> None:
    assert _module(None).mixer is None
    assert build_mix({"mixup_alpha": 0.0, "cutmix_alpha": 0}) is None


def test_multihead_module_mixes_every_head() -> None:
    net = nn.Sequential(nn.Flatten(), MultiHead(3 * 8 * 8, {"a": 4, "b": 3}))
    module = ClassifierLitModule(net=net, optimizer=torch.optim.SGD, mix={"cutmix_alpha": 1.0})
    x = torch.randn(8, 3, 8, 8)
    y = {"a": torch.arange(8) % 4, "b": torch.arange(8) % 3}
    total, losses, _, targets = module.model_step((x, y), mix=True)
    assert set(losses) == {"a", "b"} and targets["b"] is y["b"] and total.ndim == 0


# ---------------------------------------------------------------- per-image policies
def _identical(n: int = 24, size: int = 16) -> torch.Tensor:
    """``n`` copies of one structured image: any differences come from the augmentation."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=g).expand(
        n, 3, size, size
    )


@pytest.mark.parametrize(
    ("policy", "kwargs"),
    [
        ("randaugment", {}),
        ("trivialaugment", {}),
        ("autoaugment", {}),
        # One chain of one op: with one op per batch, every output would lie on the line from
        # the input to that op's result (only the mixing weight is drawn per image).
        ("augmix", {"mixture_width": 1, "chain_depth": 1}),
    ],
)
def test_policies_draw_an_operation_per_image(policy: str, kwargs: dict) -> None:
    """Identical inputs: one op per batch leaves the outputs identical (or, for AugMix, on one
    line), so their spread spans one direction at most. Per-image ops span several."""
    images = _identical()
    torch.manual_seed(0)
    out = BatchTransform(MEAN, STD, policy=policy, policy_kwargs=kwargs)(images, train=True)
    assert out.shape == (24, 3, 16, 16) and out.dtype == torch.float32
    unit = (out * 0.25 + 0.5).flatten(1)  # back to [0, 1]
    spread = torch.linalg.svdvals(unit - unit.mean(0))
    size = images[0].float().div(255).norm()
    assert spread[1] > 0.05 * size, f"{policy}: second direction {spread[1] / size:.3f}"


def test_random_erasing_per_image() -> None:
    torch.manual_seed(0)
    out = BatchTransform(MEAN, STD, random_erasing=1.0)(_identical(), train=True)
    plain = BatchTransform(MEAN, STD)(_identical(), train=False)
    erased = (out != plain).any(1)  # (B, H, W): where each image was erased
    assert erased.flatten(1).any(1).all()  # p=1: every image erased ...
    assert len({tuple(m.flatten().tolist()) for m in erased}) > 12  # ... each at its own box


def test_policies_never_touch_validation_batches() -> None:
    images = _identical()
    augmented = BatchTransform(MEAN, STD, policy="trivialaugment", random_erasing=1.0)
    torch.testing.assert_close(
        augmented(images, train=False), BatchTransform(MEAN, STD)(images, train=False)
    )
    val = per_sample_transform(MEAN, STD, policy="augmix", random_erasing=1.0, train=False)
    assert [type(op).__name__ for op in val.transforms] == ["ToDtype", "Normalize"]


def test_per_sample_twin_has_the_same_policy() -> None:
    t = BatchTransform(MEAN, STD, hflip=True, policy="randaugment", policy_kwargs={"num_ops": 3})
    ops = t.per_sample(train=True).transforms
    names = [type(op).__name__ for op in ops]
    assert names == ["RandomHorizontalFlip", "RandAugment", "ToDtype", "Normalize"]
    assert ops[1].num_ops == 3
    t = BatchTransform(MEAN, STD, random_erasing=0.3)
    assert type(t.per_sample(train=True).transforms[-1]).__name__ == "RandomErasing"


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        ({"policy": "randaug"}, r"data\.augment\.policy='randaug' is unknown.*trivialaugment"),
        ({"policy": "augmix", "policy_kwargs": {"depth": 2}}, r"data\.augment\.policy_kwargs"),
        ({"policy_kwargs": {"num_ops": 2}}, r"data\.augment\.policy is null"),
        ({"random_erasing": 1.5}, r"data\.augment\.random_erasing=1\.5"),
    ],
)
def test_bad_policy_config_names_the_key(augment: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchTransform(MEAN, STD, **augment)


def test_misspelt_augment_key_is_named() -> None:
    from src.data.mnist_datamodule import MNISTDataModule

    with pytest.raises(
        ValueError, match=r"data\.augment has unknown key\(s\) \['polcy'\].*'policy'"
    ):
        MNISTDataModule(augment={"polcy": "randaugment"})


# ------------------------------------------------------------------------ resume
def test_mix_and_policy_run_resumes_exactly(cfg_train: DictConfig, tmp_path: Path) -> None:
    """Mixing and per-image policies draw from the global RNG that the checkpoint restores."""
    extra = {
        "model.mix": BOTH,
        "data.augment": {"crop_padding": 2, "policy": "autoaugment", "random_erasing": 0.25},
    }
    _interrupt_and_resume(cfg_train, tmp_path, kill_step=18, ckpt_step=15, ckpt_epoch=1, **extra)
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["mix"] == BOTH  # the switches did reach the run
    assert ckpt["datamodule_hyper_parameters"]["augment"]["policy"] == "autoaugment"


# ------------------------------------------------------------------------ configs
def test_switches_are_off_by_default_and_set_from_the_command_line(tmp_path: Path) -> None:
    from hydra.utils import instantiate
    from torchvision.transforms import v2

    from src.models.build import instantiate_model
    from tests.conftest import compose_config

    base = ["model=cifar10_cnn_3.3m", "data=cifar10", f"data.data_dir={tmp_path}"]
    default = compose_config("train.yaml", base)
    assert default.model.mix is None and instantiate_model(default.model).mixer is None
    transform = instantiate(default.data).transform
    assert transform.policy is None and transform.erasing is None
    cfg = compose_config(
        "train.yaml",
        [
            *base,
            "model.mix={mixup_alpha:0.8,cutmix_alpha:1.0}",
            "data.augment.policy=randaugment",
            "data.augment.policy_kwargs={num_ops:3}",
            "data.augment.random_erasing=0.25",
        ],
    )
    assert isinstance(instantiate_model(cfg.model).mixer, v2.RandomChoice)
    transform = instantiate(cfg.data).transform
    assert isinstance(transform.policy, v2.RandAugment) and transform.policy.num_ops == 3
    assert transform.erasing.p == 0.25
