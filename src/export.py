"""Export a trained checkpoint: ``python src/export.py ckpt_path=... format=onnx|torch_export``.

The exported model takes a normalized float batch ``image`` of shape ``(batch, C, H, W)`` (the
batch size is dynamic) and returns the logits of every head:

- ``onnx``: one output per head, named after the head (``label`` for a single-head model), in
  the order of ``heads``; the checkpoint metadata is stored as the model's ``lhte`` metadata
  property. Needs the ``export`` extra (``onnx``, ``onnxscript``; ``onnxruntime`` to check it).
- ``torch_export``: a ``torch.export`` program (``.pt2``, load with ``torch.export.load``) whose
  module returns ``{head: logits}``; the metadata is its ``lhte.json`` extra file.

A ``<model file>.json`` with the metadata (class names, mean/std, input shape, output names) is
written next to the model. See docs/predict_export.md.
"""

import json
from pathlib import Path
from typing import Any

import hydra
import rootutils
from omegaconf import DictConfig

rootutils.setup_root(__file__, indicator=".project-root", pythonpath=True)

from src.utils.hydra_help import answer_from_config, speed_up_help, wants_info  # noqa: E402

if __name__ == "__main__" and wants_info():  # --help, --cfg, --info: before torch and Lightning
    answer_from_config(
        hydra.main(version_base="1.3", config_path="../configs", config_name="export.yaml")(
            lambda cfg: None
        )
    )

import torch  # noqa: E402
from lightning import LightningModule  # noqa: E402
from torch import nn  # noqa: E402

from src.models.build import load_model_from_checkpoint  # noqa: E402
from src.utils import (  # noqa: E402
    RankedLogger,
    extras,
    freeze_imported_objects,
    report_errors,
    task_wrapper,
)
from src.utils.utils import require_values  # noqa: E402

log = RankedLogger(__name__, rank_zero_only=True)

FORMATS = {"onnx": ".onnx", "torch_export": ".pt2"}


class ExportableClassifier(nn.Module):
    """The module's inference path (``forward_heads``, TTA included) as a plain ``nn.Module``.

    :param module: A ``ClassifierLitModule`` in eval mode.
    :param as_tuple: Return the logits as a tuple in head order (ONNX) instead of a dict.
    """

    def __init__(self, module: LightningModule, as_tuple: bool = False) -> None:
        super().__init__()
        self.module = module
        self.heads = list(module.heads)
        self.as_tuple = as_tuple

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor] | tuple[torch.Tensor, ...]:
        """Logits of every head for a normalized batch."""
        logits = self.module.forward_heads(image)
        if self.as_tuple:
            return tuple(logits[h] for h in self.heads)
        return {h: logits[h] for h in self.heads}


def example_batch(metadata: dict[str, Any], batch_size: int = 2) -> torch.Tensor:
    """A seeded random normalized batch of the checkpoint's input shape."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, *metadata["input_shape"], generator=generator)


def export_onnx(
    module: LightningModule, metadata: dict[str, Any], path: Path, opset: int | None
) -> Path:
    """Write an ONNX model with a dynamic batch dimension; outputs are named after the heads."""
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter needs it
    except ImportError as err:
        raise ImportError(
            "format=onnx needs the export extra: pip install -e '.[export]' "
            "(onnx, onnxscript, onnxruntime)."
        ) from err
    wrapper = ExportableClassifier(module, as_tuple=True).eval()
    program = torch.onnx.export(
        wrapper,
        (example_batch(metadata),),
        input_names=["image"],
        output_names=list(module.heads),
        dynamic_shapes={"image": {0: torch.export.Dim.DYNAMIC}},
        opset_version=opset,
        dynamo=True,
        external_data=False,
    )
    program.model.metadata_props["lhte"] = json.dumps(metadata)
    program.save(str(path))
    return path


def export_torch(module: LightningModule, metadata: dict[str, Any], path: Path) -> Path:
    """Write a ``torch.export`` program (``.pt2``) with a dynamic batch dimension."""
    wrapper = ExportableClassifier(module).eval()
    program = torch.export.export(
        wrapper,
        (example_batch(metadata),),
        dynamic_shapes={"image": {0: torch.export.Dim.DYNAMIC}},
    )
    torch.export.save(program, str(path), extra_files={"lhte.json": json.dumps(metadata)})
    return path


def run_exported(path: Path, fmt: str, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{head: logits}`` of an exported model file (onnxruntime or ``torch.export.load``)."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        outputs = session.run(names, {"image": images.numpy()})
        return {n: torch.from_numpy(o) for n, o in zip(names, outputs, strict=True)}
    with torch.no_grad():
        return dict(torch.export.load(str(path)).module()(images))


def max_difference(module: LightningModule, path: Path, fmt: str, images: torch.Tensor) -> float:
    """Largest absolute logit difference between the exported file and the module."""
    exported = run_exported(path, fmt, images)
    with torch.inference_mode():
        expected = module.forward_heads(images)
    return max(float((exported[h] - expected[h]).abs().max()) for h in module.heads)


#: The keys export needs, with an example of each for the error that names them.
REQUIRED = {"ckpt_path": "<run>/checkpoints/last.ckpt"}


@task_wrapper
def export(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Export ``cfg.ckpt_path`` to ``cfg.format``; optionally check it against the module.

    :return: ``({"max_abs_diff": d} if checked, objects)``; objects include the model ``path``.
    """
    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is not one of {list(FORMATS)}.")
    require_values(cfg, REQUIRED)
    module, metadata = load_model_from_checkpoint(cfg.ckpt_path)
    if not metadata.get("input_shape"):
        raise ValueError(f"{cfg.ckpt_path} does not record the model's input shape.")
    default = Path(cfg.paths.output_dir) / f"model{FORMATS[fmt]}"
    path = Path(cfg.output_path) if cfg.get("output_path") else default
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info(f"Exporting {cfg.ckpt_path} to {path} ({fmt})")
    if fmt == "onnx":
        export_onnx(module, metadata, path, cfg.get("opset_version"))
    else:
        export_torch(module, metadata, path)
    sidecar = path.with_name(path.name + ".json")
    sidecar.write_text(
        json.dumps({**metadata, "format": fmt, "outputs": list(module.heads)}, indent=1)
    )
    metrics: dict[str, Any] = {}
    if cfg.get("check"):
        # An odd batch size, unlike the example batch: checks the batch dimension is dynamic.
        images = example_batch(metadata, batch_size=3)
        try:
            metrics["max_abs_diff"] = max_difference(module, path, fmt, images)
            log.info(f"Exported model matches the checkpoint: {metrics['max_abs_diff']:.2e}")
        except ImportError:
            log.warning("onnxruntime is not installed: the exported model was not checked.")
    log.info(f"Wrote {path} and {sidecar}")
    return metrics, {"cfg": cfg, "model": module, "path": path, "metadata_path": sidecar}


@hydra.main(version_base="1.3", config_path="../configs", config_name="export.yaml")
@report_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    require_values(cfg, REQUIRED)  # before the config tree, which cannot show a missing value
    extras(cfg)
    export(cfg)


if __name__ == "__main__":
    speed_up_help()
    freeze_imported_objects()
    main()
