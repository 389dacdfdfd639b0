"""Learning-rate schedules built from torch's schedulers."""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR


def warmup_steps(warmup: float, total_steps: int) -> int:
    """Warm-up length in steps: ``warmup`` is a fraction of the run (``0 <= warmup < 1``) or a
    step count (a whole number ``>= 1``)."""
    if warmup < 0 or (warmup >= 1 and warmup != int(warmup)):
        raise ValueError(
            f"model.scheduler.warmup={warmup} must be a fraction of the run in [0, 1) or a "
            "whole number of steps, e.g. 0.05 or 500."
        )
    steps = int(warmup) if warmup >= 1 else math.ceil(warmup * total_steps)
    if steps >= total_steps:
        raise ValueError(
            f"model.scheduler.warmup={warmup} is {steps} steps, but the run has only "
            f"{total_steps}; lower the warm-up or raise trainer.max_epochs."
        )
    return steps


class WarmupCosineLR(SequentialLR):
    """Linear warm-up from ``start_factor * lr`` to ``lr``, then cosine decay to ``min_lr``.

    Stepped every batch (``scheduler_interval: step``); the LR reaches ``min_lr`` after the
    last of ``total_steps`` steps.

    :param optimizer: The wrapped optimizer; its ``lr`` is the peak.
    :param total_steps: Optimizer steps of the whole run (the module fills it in from the
        trainer, as for ``OneCycleLR``).
    :param warmup: Warm-up length: a fraction of ``total_steps`` or a number of steps.
    :param start_factor: First LR of the warm-up, as a fraction of ``lr`` (> 0).
    :param min_lr: Floor the cosine decays to (the same for every parameter group).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup: float = 0.05,
        start_factor: float = 0.01,
        min_lr: float = 0.0,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"WarmupCosineLR needs total_steps >= 1, got {total_steps}.")
        if not 0 < start_factor <= 1:
            raise ValueError(
                f"model.scheduler.start_factor={start_factor} must be in (0, 1]: the first "
                "warm-up LR as a fraction of the optimizer's lr."
            )
        steps = warmup_steps(warmup, total_steps)
        cosine = CosineAnnealingLR(optimizer, T_max=total_steps - steps, eta_min=min_lr)
        if steps == 0:
            super().__init__(optimizer, [cosine], milestones=[])
            return
        linear = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=steps)
        super().__init__(optimizer, [linear, cosine], milestones=[steps])
