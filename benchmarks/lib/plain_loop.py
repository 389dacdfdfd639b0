"""The hand-written PyTorch training loop the template's speed is compared with.

It trains the same network (same initial weights) on the same uint8 training tensor as the
template, with the same batch size, normalization, loss, optimizer, precision and memory format,
and nothing else: no callbacks, no logging, no per-step hooks.
"""

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import torch

from benchmarks.lib.timing import peak_memory, synchronize, time_to_target


def autocast(device: torch.device, precision: str) -> Any:
    """The autocast context Lightning's ``precision`` uses (none for 32-bit)."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


class PlainLoop:
    """The minimal PyTorch training loop the template is compared with.

    :param net: The network (already on ``device``).
    :param optimizer: Optimizer of ``net``'s parameters.
    :param criterion: Loss module.
    :param images: Training images, uint8 ``(N, C, H, W)`` on ``device``.
    :param labels: Training labels ``(N,)`` on ``device``.
    :param mean: Per-channel mean, shaped ``(1, C, 1, 1)``.
    :param std: Per-channel standard deviation, shaped ``(1, C, 1, 1)``.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: Callable[..., torch.Tensor],
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        batch_size: int,
        precision: str,
        channels_last: bool,
    ) -> None:
        self.net, self.optimizer, self.criterion = net, optimizer, criterion
        self.images, self.labels, self.mean, self.std = images, labels, mean, std
        self.batch_size, self.precision, self.channels_last = batch_size, precision, channels_last
        self.device = images.device

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalized float, in the configured memory format."""
        x = (x.float().div_(255.0) - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled epoch of ``(images, labels)`` slices."""
        order = torch.randperm(len(self.images), device=self.device)
        for i in range(0, len(order), self.batch_size):
            index = order[i : i + self.batch_size]
            yield self.images[index], self.labels[index]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step on a uint8 batch."""
        with autocast(self.device, self.precision):
            loss = self.criterion(self.net(self.prepare(x)), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def images_per_s(self, warmup: int, steps: int) -> float:
        """Training throughput over ``steps`` steps after ``warmup`` steps."""
        self.net.train()
        done, images, start = 0, 0, 0.0
        while done < warmup + steps:
            for x, y in self.batches():
                if done == warmup:
                    synchronize(self.device)
                    start = time.perf_counter()
                self.step(x, y)
                done += 1
                images += len(x) if done > warmup else 0
                if done == warmup + steps:
                    break
        synchronize(self.device)
        return images / max(time.perf_counter() - start, 1e-9)

    @torch.no_grad()
    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Test accuracy (eval mode, same precision)."""
        self.net.eval()
        correct = 0
        for i in range(0, len(images), 1000):
            with autocast(self.device, self.precision):
                logits = self.net(self.prepare(images[i : i + 1000]))
            correct += int((logits.argmax(-1) == labels[i : i + 1000]).sum())
        self.net.train()
        return correct / max(len(images), 1)

    def train_until(
        self, test: tuple[torch.Tensor, torch.Tensor], target: float, max_epochs: int
    ) -> list[tuple[float, float]]:
        """Train epoch by epoch until the test accuracy reaches ``target``: ``[(seconds, acc)]``."""
        history: list[tuple[float, float]] = []
        seconds = 0.0
        self.net.train()
        for _ in range(max_epochs):
            synchronize(self.device)
            start = time.perf_counter()
            for x, y in self.batches():
                self.step(x, y)
            synchronize(self.device)
            seconds += time.perf_counter() - start
            history.append((seconds, self.accuracy(*test)))
            if history[-1][1] >= target:
                break
        return history


def plain_run(
    cfg: Any,
    datamodule: Any,
    args: argparse.Namespace,
    device: torch.device,
    target: float | None,
) -> dict[str, Any]:
    """Throughput (and time to ``target``) of :class:`PlainLoop` for the same model and data."""
    import hydra
    import lightning as L

    from src.models.build import instantiate_model

    train, test = datamodule.data_train, datamodule.data_test
    mean = datamodule.transform.mean.to(device)
    std = datamodule.transform.std.to(device)

    def build() -> PlainLoop:
        L.seed_everything(args.seed, verbose=False)
        net = instantiate_model(cfg.model).net.to(device)  # same initial weights as the template
        if args.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if args.compile:
            net.compile()
        optimizer = hydra.utils.instantiate(cfg.model.optimizer)(params=net.parameters())
        criterion = hydra.utils.instantiate(cfg.model.criterion).to(device)
        return PlainLoop(
            net,
            optimizer,
            criterion,
            train.images.to(device),
            train.labels.to(device),
            mean,
            std,
            args.batch_size,
            args.precision,
            args.channels_last,
        )

    loop = build()
    with peak_memory(device) as memory:
        throughput = loop.images_per_s(args.warmup, args.steps)
    result: dict[str, Any] = {
        "images_per_s": throughput,
        "peak_mib": memory["peak_mib"],
        "memory_kind": memory["kind"],
    }
    if target is not None:
        loop = build()
        history = loop.train_until(
            (test.images.to(device), test.labels.to(device)), target, args.max_epochs
        )
        result.update(time_to_target(history, target))
    return result
