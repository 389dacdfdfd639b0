"""One LightningModule for every architecture, single-head or multihead.

The network may return a tensor (one head) or a dict ``{head: logits}`` (several heads).
:meth:`ClassifierLitModule.forward_heads` turns a tensor into a one-head dict; everything after it
(losses, metrics, logging, checkpoints) is the same code for one head or many. With one head the
original metric names are logged (``train/loss``, ``val/acc``, ``val/acc_best``, ``test/acc``);
with several, ``<stage>/<head>_acc`` and ``<stage>/<head>_loss`` plus the weighted ``<stage>/loss``.
"""

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning import LightningModule
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from src.models.components.heads import MultiHead
from src.models.components.losses import (
    ClassificationLoss,
    build_mix,
    instantiate_criterion,
    mix_batch,
)
from src.utils.data_description import describe, names_for_model
from src.utils.local_paths import portable_paths
from src.utils.plain_data import make_plain, to_plain

STAGES = ("train", "val", "test")
Batch = tuple[torch.Tensor, torch.Tensor | dict[str, torch.Tensor]]
#: Key of the checkpoint entry that lets predict/export rebuild the model without the config.
METADATA_KEY = "lhte"
#: Checkpoint key of the running train-epoch metric states (see ``train_metric_states``).
TRAIN_METRICS_KEY = "train_metric_states"
METADATA_VERSION = 1
#: Values of ``model.tta``: ``None`` (off) or ``"hflip"`` (mean logits of image and mirror).
TTA_MODES = (None, "hflip")


def infer_heads(net: nn.Module, num_classes: int | None = None) -> dict[str, int]:
    """Return ``{head: num_classes}`` for ``net``; a single head is called ``"label"``.

    A :class:`MultiHead` anywhere in ``net`` defines the heads. Otherwise the class count comes
    from ``num_classes``, the network's ``num_classes``/``output_size`` attribute (timm models
    have one) or its last ``nn.Linear``.
    """
    for module in net.modules():
        if isinstance(module, MultiHead):
            return module.heads_config
    if num_classes is None:
        num_classes = getattr(net, "num_classes", None) or getattr(net, "output_size", None)
    if num_classes is None:
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        num_classes = linears[-1].out_features if linears else None
    if not num_classes:
        raise ValueError(
            f"Cannot tell how many classes {type(net).__name__} predicts; "
            "pass model.num_classes=<N> in the config."
        )
    return {"label": int(num_classes)}


def head_class_names(datamodule: Any, heads: Mapping[str, int]) -> dict[str, list[str]]:
    """``{model head: class names}`` from the datamodule's description (``"0" ... "n-1"`` for a
    head whose names are unknown)."""
    return names_for_model(describe(datamodule) if datamodule is not None else None, heads)


class ClassifierLitModule(LightningModule):
    """Image classifier with configurable network, optimizer, scheduler and loss(es).

    :param net: Network mapping images to logits (tensor) or to ``{head: logits}``.
    :param optimizer: Partial optimizer; called with the parameters.
    :param scheduler: Optional partial LR scheduler; called with the optimizer.
    :param criterion: Loss for every head (default ``CrossEntropyLoss``): any ``torch.nn`` loss,
        or its config (list-valued ``weight``/``pos_weight`` become tensors).
    :param criteria: Per-head losses or loss configs ``{head: loss}``; heads left out use
        ``criterion``.
    :param loss_weights: Per-head weights of the total loss; missing heads weigh 1.0.
    :param compile: Compile the network with ``torch.compile`` before fitting.
    :param channels_last: Use channels-last memory format (faster convolutions with bf16).
    :param num_classes: Class count when it cannot be read off a single-head network.
    :param primary_head: Head that ``val/acc_best`` follows (default: the first head).
    :param scheduler_interval: ``"epoch"`` or ``"step"``: when the scheduler steps.
    :param scheduler_monitor: Metric a ``ReduceLROnPlateau`` scheduler watches.
    :param tta_flip: The older spelling of ``tta="hflip"``, kept so configs and checkpoints
        that use it still work.
    :param tta: Test-time augmentation: ``None`` (off) or ``"hflip"``: outside training
        (validation, test, predict) the logits are the mean of the network's logits for the
        images and their horizontal flips. Only for data where a mirrored image keeps its label
        (CIFAR, not digits).
    :param mix: MixUp/CutMix of training batches, ``{mixup_alpha: a, cutmix_alpha: b}`` (both:
        one of the two per batch); the loss sees the mixed class probabilities, the training
        accuracy the original labels. ``None``: no mixing.
    :param head_lr: Learning rate of the network's ``head`` (its own parameter group); the rest
        trains at the optimizer's ``lr``. ``None``: one LR for everything.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        criterion: nn.Module | Mapping[str, Any] | None = None,
        criteria: Mapping[str, nn.Module | Mapping[str, Any]] | None = None,
        loss_weights: Mapping[str, float] | None = None,
        compile: bool = False,
        channels_last: bool = False,
        num_classes: int | None = None,
        primary_head: str | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str = "val/loss",
        tta_flip: bool = False,
        tta: str | None = None,
        mix: Mapping[str, float] | None = None,
        head_lr: float | None = None,
    ) -> None:
        super().__init__()
        if tta not in TTA_MODES:
            raise ValueError(
                f"model.tta={tta!r} is not a test-time augmentation; use one of {list(TTA_MODES)}"
                " (null turns it off)."
            )
        self.tta = "hflip" if tta_flip else tta
        # Only plain data goes into hparams so checkpoints load with weights_only=True.
        self.save_hyperparameters(
            logger=False, ignore=["net", "optimizer", "scheduler", "criterion", "criteria"]
        )
        make_plain(self.hparams)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.heads = infer_heads(net, num_classes)
        self.multihead = len(self.heads) > 1
        self.primary_head = primary_head or next(iter(self.heads))
        self._check_head_names("primary_head", [self.primary_head])

        criteria = dict(criteria or {})
        self._check_head_names("criteria", criteria)
        self._check_head_names("loss_weights", loss_weights or {})
        # The one place losses are built from their configs (instantiate_model passes them
        # here unbuilt) and dry-run, on each head's class count.
        default = instantiate_criterion(criterion)
        self.criteria = nn.ModuleDict(
            {
                h: ClassificationLoss(
                    instantiate_criterion(criteria[h]) if h in criteria else default, n
                )
                for h, n in self.heads.items()
            }
        )
        self.loss_weights = {h: float((loss_weights or {}).get(h, 1.0)) for h in self.heads}
        #: MixUp/CutMix transform for training batches (``None``: off).
        self.mixer = build_mix(self.hparams.get("mix"))
        if self.mixer is not None:
            for h in self.heads:
                where = f"model.criteria.{h}" if h in criteria else "model.criterion"
                self.criteria[h].check_soft_targets(where)

        self.metrics = nn.ModuleDict(
            {
                # micro: the fraction of correct images, as in the original template (the
                # class's default "macro" would score a constant guess at exactly 1/n).
                f"{stage}_{h}": MulticlassAccuracy(
                    num_classes=n, average="micro", validate_args=False
                )
                for stage in STAGES
                for h, n in self.heads.items()
            }
        )
        self.losses = nn.ModuleDict(
            {f"{stage}_{h}": MeanMetric() for stage in STAGES for h in [*self.heads, "total"]}
        )
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # resumed runs keep their best accuracy

        #: Plain ``cfg.model`` (set by :func:`~src.models.build.instantiate_model`);
        #: saved in checkpoints so the module can be rebuilt without the training config.
        self.model_config: dict[str, Any] | None = None
        #: The metadata of the checkpoint this module was loaded from, if any.
        self.checkpoint_metadata: dict[str, Any] | None = None
        self._input_shape: list[int] | None = None  # (C, H, W) of the last batch seen

    # ----------------------------------------------------------------- naming
    def _check_head_names(self, what: str, names: Any) -> None:
        unknown = [n for n in names if n not in self.heads]
        if unknown:
            raise ValueError(
                f"model.{what} names unknown head(s) {unknown}; the network's heads are "
                f"{list(self.heads)} (set in net.heads_config)."
            )

    def metric_name(self, stage: str, head: str, kind: str) -> str:
        """Logged name: ``val/acc`` for a single head, ``val/<head>_acc`` for several."""
        if head == "total" or not self.multihead:
            return f"{stage}/{kind}"
        return f"{stage}/{head}_{kind}"

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Run the network on a batch of images (as the network returns it)."""
        if self.hparams.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def forward_heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the network and always return ``{head: logits}``: the one place tensors become dicts.

        With ``tta="hflip"`` and the module in eval mode, each head's logits are averaged over
        the images and their horizontal flips (one forward pass on the doubled batch).
        """
        flip_views = self.tta == "hflip" and not self.training and x.ndim == 4
        out = self(torch.cat([x, x.flip(-1)]) if flip_views else x)
        heads = {self.primary_head: out} if isinstance(out, torch.Tensor) else out
        if flip_views:
            heads = {h: (y[: len(x)] + y[len(x) :]) / 2 for h, y in heads.items()}
        return heads

    def targets_as_dict(
        self, y: torch.Tensor | Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Match the batch's labels to the heads, with a clear error when they disagree."""
        if isinstance(y, torch.Tensor):
            if self.multihead:
                raise ValueError(
                    f"The model has heads {list(self.heads)} but the data gives one label per "
                    "image; use a multihead data config (e.g. data=multihead_mnist)."
                )
            return {self.primary_head: y}
        missing = [h for h in self.heads if h not in y]
        if missing and not (len(y) == 1 and not self.multihead):
            raise ValueError(
                f"The data has no labels for head(s) {missing}; it provides {list(y)}. "
                "Make net.heads_config match the data's heads."
            )
        if not self.multihead and missing:
            return {self.primary_head: next(iter(y.values()))}
        return {h: y[h] for h in self.heads}

    # ------------------------------------------------------------------- steps
    def model_step(self, batch: Batch, mix: bool = False) -> tuple[torch.Tensor, dict, dict, dict]:
        """Compute ``(total_loss, per_head_losses, per_head_logits, per_head_targets)``.

        With ``mix`` (training) and ``model.mix`` set, images and targets are mixed first: the
        losses use the mixed class probabilities, the returned targets stay the hard labels.
        """
        x, y = batch
        self._input_shape = list(x.shape[1:])
        targets = self.targets_as_dict(y)
        loss_targets = targets
        if mix and self.mixer is not None:
            x, loss_targets = mix_batch(self.mixer, x, targets, self.heads)
        logits = self.forward_heads(x)
        losses = {h: self.criteria[h](logits[h], loss_targets[h]) for h in self.heads}
        total = sum(self.loss_weights[h] * losses[h] for h in self.heads)
        return total, losses, logits, targets

    def _shared_step(self, batch: Batch, stage: str) -> tuple[torch.Tensor, dict, dict]:
        total, losses, logits, targets = self.model_step(batch, mix=stage == "train")
        # Metric objects accumulate on the device and are logged once per epoch (see
        # _log_epoch_metrics): no per-step sync, and none of self.log's per-call cost (~0.7 ms
        # each, a tenth of a small CNN's CPU step). ``update``, not ``metric(...)``: the call
        # form also computes the batch's own value (5x the cost), which nothing reads.
        # Losses are weighted by batch size, so a short last batch counts for its images only.
        size = len(next(iter(targets.values())))
        self.losses[f"{stage}_total"].update(total.detach(), weight=size)
        for h in self.heads:
            self.metrics[f"{stage}_{h}"].update(logits[h].detach(), targets[h])
            if self.multihead:
                self.losses[f"{stage}_{h}"].update(losses[h].detach(), weight=size)
        return total, logits, targets

    def _log_epoch_metrics(self, stage: str) -> None:
        """Log the epoch's loss and accuracy of ``stage``; Lightning computes, then resets them."""
        log = dict(on_step=False, on_epoch=True, sync_dist=False)  # torchmetrics syncs itself
        self.log(f"{stage}/loss", self.losses[f"{stage}_total"], prog_bar=True, **log)
        for h in self.heads:
            acc = self.metrics[f"{stage}_{h}"]
            self.log(self.metric_name(stage, h, "acc"), acc, prog_bar=True, **log)
            if self.multihead:
                self.log(self.metric_name(stage, h, "loss"), self.losses[f"{stage}_{h}"], **log)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Weighted loss over all heads for one training batch."""
        return self._shared_step(batch, "train")[0]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate validation loss and accuracy."""
        self._shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, dict[str, torch.Tensor]]:
        """Accumulate test loss and accuracy; return ``{logits, targets}`` (per head) for
        callbacks such as :class:`~src.callbacks.confusion_figures.TestFiguresCallback`."""
        _, logits, targets = self._shared_step(batch, "test")
        return {"logits": {h: v.detach() for h, v in logits.items()}, "targets": targets}

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Return class probabilities per head."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return {h: logits.softmax(-1) for h, logits in self.forward_heads(x).items()}

    def on_train_epoch_end(self) -> None:
        """Log the training loss and accuracy of the epoch."""
        self._log_epoch_metrics("train")

    def on_test_epoch_end(self) -> None:
        """Log the test loss and accuracy."""
        self._log_epoch_metrics("test")

    def on_validation_epoch_end(self) -> None:
        """Log validation metrics; track the best accuracy of the primary head (not during
        sanity checks, whose metrics Lightning logs and then discards)."""
        self._log_epoch_metrics("val")
        if self.trainer.sanity_checking:
            return
        acc = self.metrics[f"val_{self.primary_head}"].compute()
        self.val_acc_best(acc)
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    # ------------------------------------------------------------ checkpoints
    def metadata(self) -> dict[str, Any]:
        """What predict/export need without the training config, as plain data.

        ``{version, model, heads, class_names, normalize, input_shape, data}``: the model config,
        ``{head: num_classes}``, ``{head: [names]}``, ``{mean, std}`` of the inputs, ``[C, H, W]``
        and the datamodule's class path and arguments. Taken from the attached datamodule when
        there is one, else from the checkpoint this module was loaded from.
        """
        previous = dict(self.checkpoint_metadata or {})
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        meta: dict[str, Any] = {
            "version": METADATA_VERSION,
            "model": self.model_config or previous.get("model"),
            "heads": dict(self.heads),
        }
        if datamodule is not None:
            description = describe(datamodule)
            shape = self._input_shape or list(description.input_shape)
            data_cls = type(datamodule)
            meta |= {
                "class_names": names_for_model(description, self.heads),
                "normalize": description.normalize,
                "input_shape": [int(s) for s in shape] or None,
                "data": {
                    "_target_": f"{data_cls.__module__}.{data_cls.__qualname__}",
                    **to_plain(dict(getattr(datamodule, "hparams", {}))),
                },
            }
        else:
            meta |= {
                "class_names": previous.get("class_names") or names_for_model(None, self.heads),
                "normalize": previous.get("normalize"),
                "input_shape": previous.get("input_shape") or self._input_shape,
                "data": previous.get("data"),
            }
        # No absolute paths of this machine travel with the checkpoint (predict localizes them).
        return portable_paths(to_plain(meta))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store :meth:`metadata` under :data:`METADATA_KEY`."""
        checkpoint[METADATA_KEY] = self.metadata()
        checkpoint[TRAIN_METRICS_KEY] = self.train_metric_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the checkpoint's metadata (re-saved when no datamodule is attached)."""
        self.checkpoint_metadata = checkpoint.get(METADATA_KEY)
        self.load_train_metric_states(checkpoint.get(TRAIN_METRICS_KEY) or {})
        if self.model_config is None and self.checkpoint_metadata:
            self.model_config = self.checkpoint_metadata.get("model")

    # ------------------------------------------------------- train metric states
    def _train_metrics(self) -> dict[str, Metric]:
        return {
            f"{kind}.{name}": metric
            for kind, group in (("metrics", self.metrics), ("losses", self.losses))
            for name, metric in group.items()
            if name.startswith("train_")
        }

    def train_metric_states(self) -> dict[str, dict[str, Any]]:
        """The running train-epoch metric states (a checkpoint saved mid-epoch resumes them).

        Kept beside ``state_dict`` rather than made ``persistent``: checkpoints without them
        still load strictly, and exported weights stay free of metric buffers. Validation and
        test metrics are left out: they restart with every validation or test run.
        """
        out = {}
        for key, metric in self._train_metrics().items():
            states = {}
            for name in metric._defaults:
                value = getattr(metric, name)
                states[name] = (
                    [v.detach().cpu() for v in value]
                    if isinstance(value, list)
                    else value.detach().cpu()
                )
            out[key] = {"states": states, "update_count": int(metric._update_count)}
        return out

    def load_train_metric_states(self, saved: dict[str, dict[str, Any]]) -> None:
        """Restore :meth:`train_metric_states` (unknown or missing entries are ignored)."""
        metrics = self._train_metrics()
        for key, entry in saved.items():
            metric = metrics.get(key)
            if metric is None:
                continue
            for name, value in entry["states"].items():
                if name not in metric._defaults:
                    continue
                current = getattr(metric, name)
                device = current[0].device if isinstance(current, list) and current else None
                if isinstance(value, list):
                    setattr(metric, name, [v.to(device or self.device) for v in value])
                else:
                    setattr(metric, name, value.to(current.device))
            metric._update_count = entry["update_count"]
            metric._computed = None

    # ------------------------------------------------------------ optimizers
    @property
    def backbone(self) -> nn.Module:
        """The network's ``backbone`` (what Lightning's ``BackboneFinetuning`` freezes)."""
        backbone = getattr(self.net, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise AttributeError("backbone")  # Python then asks __getattr__, which explains
        return backbone

    def __getattr__(self, name: str) -> Any:
        if name == "backbone":  # only reached when the network has none
            raise AttributeError(
                f"{type(self.net).__name__} has no `backbone` module, so callbacks=finetune "
                "cannot freeze it; use model=timm or model=torchvision."
            )
        return super().__getattr__(name)

    def setup(self, stage: str) -> None:
        """Apply memory format and compilation once the trainer is known."""
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.hparams.compile and stage == "fit":
            self.net.compile()  # in place: state_dict keys stay the same

    def configure_optimizers(self) -> dict[str, Any]:
        """Build the optimizer and, if configured, the LR scheduler.

        Frozen parameters (``requires_grad=False``, e.g. a backbone that ``BackboneFinetuning``
        adds later as its own group) are left out; with ``head_lr`` the head is a second group.
        """
        optimizer = self.optimizer_factory(params=_param_groups(self))
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        kwargs = _group_max_lr(self.scheduler_factory, optimizer)
        _check_finetuning_scheduler(self.trainer.callbacks, kwargs, self.scheduler_factory)
        params = inspect.signature(self.scheduler_factory).parameters
        if "total_steps" in params and "total_steps" not in getattr(
            self.scheduler_factory, "keywords", {}
        ):
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer=optimizer, **kwargs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.hparams.scheduler_monitor,
                "interval": self.hparams.scheduler_interval,
                "frequency": 1,
            },
        }


def _param_groups(module: ClassifierLitModule) -> list[Any]:
    """The trainable parameters; with ``head_lr``, ``[{rest}, {head, lr: head_lr}]``."""
    trainable = [p for p in module.trainer.model.parameters() if p.requires_grad]
    head_lr = module.hparams.get("head_lr")
    if head_lr is None:
        return trainable
    head = getattr(module.net, "head", None)
    if not isinstance(head, nn.Module):
        raise ValueError(
            f"model.head_lr={head_lr}: {type(module.net).__name__} has no `head` module to give "
            "its own learning rate; set model.head_lr=null."
        )
    in_head = {id(p) for p in head.parameters()}
    return [
        {"params": [p for p in trainable if id(p) not in in_head]},
        {"params": [p for p in trainable if id(p) in in_head], "lr": float(head_lr)},
    ]


def _group_max_lr(factory: Callable[..., Any], optimizer: torch.optim.Optimizer) -> dict:
    """A scalar ``max_lr`` (OneCycleLR) scaled to each group's LR, so that ``head_lr`` keeps
    its ratio to the optimizer's LR (a scalar would give every group the same peak)."""
    max_lr = getattr(factory, "keywords", {}).get("max_lr")
    base = optimizer.defaults.get("lr")
    if len(optimizer.param_groups) < 2 or not isinstance(max_lr, int | float) or not base:
        return {}
    return {"max_lr": [max_lr * g["lr"] / base for g in optimizer.param_groups]}


def _check_finetuning_scheduler(callbacks: list, kwargs: dict, factory: Callable) -> None:
    """Schedulers with per-group peaks cannot take the group BackboneFinetuning adds later."""
    from lightning.pytorch.callbacks import BaseFinetuning

    has_max_lr = "max_lr" in kwargs or "max_lr" in getattr(factory, "keywords", {})
    if has_max_lr and any(isinstance(c, BaseFinetuning) for c in callbacks):
        name = getattr(getattr(factory, "func", factory), "__name__", "this scheduler")
        raise ValueError(
            f"callbacks=finetune adds the backbone to the optimizer when it unfreezes it, "
            f"which {name} cannot schedule; use model/scheduler=none or plateau (or a cosine "
            "schedule)."
        )
