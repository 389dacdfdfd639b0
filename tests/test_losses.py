"""Every torch loss gets the input form it expects from the module."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from src.models.components.losses import ClassificationLoss, instantiate_criterion

LOGITS = torch.randn(8, 5, requires_grad=True)
TARGET = torch.randint(0, 5, (8,))


@pytest.mark.parametrize(
    "criterion",
    [
        nn.CrossEntropyLoss(),
        nn.NLLLoss(),
        nn.MSELoss(),
        nn.L1Loss(),
        nn.BCEWithLogitsLoss(),
        nn.BCELoss(),
        nn.KLDivLoss(reduction="batchmean"),
        nn.MultiMarginLoss(),
        nn.HuberLoss(),
        nn.MultiLabelSoftMarginLoss(),
    ],
)
def test_every_loss_runs_and_backpropagates(criterion: nn.Module) -> None:
    loss = ClassificationLoss(criterion)(LOGITS, TARGET)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert LOGITS.grad is not None


def test_nll_on_log_probs_equals_cross_entropy() -> None:
    nll = ClassificationLoss(nn.NLLLoss())(LOGITS, TARGET)
    ce = ClassificationLoss(nn.CrossEntropyLoss())(LOGITS, TARGET)
    torch.testing.assert_close(nll, ce)


def test_mse_uses_probabilities_and_one_hot_targets() -> None:
    loss = ClassificationLoss(nn.MSELoss())(LOGITS, TARGET)
    expected = ((LOGITS.softmax(-1) - nn.functional.one_hot(TARGET, 5)) ** 2).mean()
    torch.testing.assert_close(loss, expected)


def test_list_weights_from_yaml_become_tensors() -> None:
    cfg = OmegaConf.create(
        {"_target_": "torch.nn.CrossEntropyLoss", "weight": [1.0, 2.0, 1.0, 1.0, 1.0]}
    )
    criterion = instantiate_criterion(cfg)
    assert isinstance(criterion.weight, torch.Tensor) and criterion.weight[1] == 2.0


@pytest.mark.parametrize(
    "overrides, kind, weight",
    [
        (["model.criterion.weight=[1,1,1,1,1,1,1,1,1,2]"], nn.CrossEntropyLoss, 2.0),
        (["model.criterion._target_=torch.nn.MSELoss"], nn.MSELoss, None),
        (["model.criterion._target_=torch.nn.NLLLoss"], nn.NLLLoss, None),
    ],
)
def test_the_command_line_sets_class_weights_without_a_plus(
    overrides: list[str], kind: type, weight: float | None
) -> None:
    """The shared config lists ``weight: null``, so the documented
    ``model.criterion.weight=[...]`` needs no ``+``; a loss that takes no weight (MSELoss)
    does not get the null one."""
    from tests.conftest import compose_config

    criterion = instantiate_criterion(compose_config("train.yaml", overrides).model.criterion)
    assert type(criterion) is kind
    if weight is not None:
        assert criterion.weight.tolist()[-1] == weight
    else:
        assert getattr(criterion, "weight", None) is None


def test_default_and_missing_target() -> None:
    assert isinstance(instantiate_criterion(None), nn.CrossEntropyLoss)
    with pytest.raises(ValueError, match="_target_"):
        instantiate_criterion({"weight": [1.0]})


class CountingLoss(nn.CrossEntropyLoss):
    """Cross-entropy that counts its calls and the class counts it was called with."""

    calls: list[int] = []

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        CountingLoss.calls.append(int(input.shape[-1]))
        return super().forward(input, target)


ONES = "[" + ",".join(["1.0"] * 10) + "]"


def test_the_loss_is_built_by_the_module_and_checked_once() -> None:
    """From config to a model checked against its data, each head's loss runs once: the dry run
    on the head's class count covers the model/data check; list weights become tensors."""
    from src.data.mnist_datamodule import MNISTDataModule
    from src.models.build import instantiate_model
    from src.utils.checks import check_model_matches_data
    from tests.conftest import compose_config

    cfg = compose_config(
        "train.yaml",
        [
            "model.criterion._target_=tests.test_losses.CountingLoss",
            f"model.criterion.weight={ONES}",
        ],
    )
    CountingLoss.calls.clear()
    model = instantiate_model(cfg.model)
    assert CountingLoss.calls == [10]
    assert model.criteria["label"].checked_classes == {10}
    assert torch.equal(model.criteria["label"].criterion.weight, torch.ones(10))
    check_model_matches_data(model, MNISTDataModule(data_dir="unused"))
    assert CountingLoss.calls == [10]


def test_a_class_count_not_yet_checked_is_run_and_named() -> None:
    loss = ClassificationLoss(nn.CrossEntropyLoss(weight=torch.ones(3)), num_classes=10)
    assert loss.checked_classes == {3}  # the weight's length: the head's problem, named below
    with pytest.raises(ValueError, match=r"head 'digit'.*10 classes.*one value per class, here 10"):
        loss.check_classes(10, "digit")
    ClassificationLoss(nn.CrossEntropyLoss(), num_classes=7).check_classes(7, "label")
