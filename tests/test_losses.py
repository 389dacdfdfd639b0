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


def test_default_and_missing_target() -> None:
    assert isinstance(instantiate_criterion(None), nn.CrossEntropyLoss)
    with pytest.raises(ValueError, match="_target_"):
        instantiate_criterion({"weight": [1.0]})
