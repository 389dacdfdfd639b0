"""``src/export.py``: ONNX and ``torch.export`` files give the Lightning model's logits.

Each exported file is reloaded (onnxruntime, ``torch.export.load``) and run on a batch whose size
differs from the export's example batch (the batch dimension is dynamic); the outputs must equal
the checkpoint module's ``forward_heads`` on the same batch.
"""

import json
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from src.export import export
from src.models.build import load_model_from_checkpoint
from tests.conftest import MULTIHEAD, compose_config

needs_onnxruntime = pytest.mark.skipif(
    find_spec("onnxruntime") is None or find_spec("onnxscript") is None,
    reason="ONNX export needs the export extra: pip install -e '.[export]'",
)


def export_cfg(out_dir: Path, ckpt: Path, fmt: str, *overrides: str) -> DictConfig:
    """``configs/export.yaml`` for ``ckpt``, writing into ``out_dir``."""
    cfg = compose_config("export.yaml", [f"ckpt_path={ckpt}", f"format={fmt}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.log_dir = str(out_dir)
        cfg.extras.print_config = False
    HydraConfig().set_config(cfg)
    return cfg


def reference(ckpt: Path, batch_size: int = 5) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A random normalized batch and the Lightning module's logits for it."""
    module, meta = load_model_from_checkpoint(ckpt)
    images = torch.randn(
        batch_size, *meta["input_shape"], generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        return images, module.forward_heads(images)


def run_onnx(path: Path, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run an ONNX file with onnxruntime: ``{output name: tensor}``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(names, {"image": images.numpy()})
    return {n: torch.from_numpy(o) for n, o in zip(names, outputs, strict=True)}


def assert_same(exported: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Same heads in the same order, equal logits."""
    assert list(exported) == list(expected)
    for head, logits in expected.items():
        torch.testing.assert_close(exported[head], logits, rtol=1e-4, atol=1e-5)


@needs_onnxruntime
@pytest.mark.parametrize("which", ["single", "multi"])
def test_onnx_matches_lightning(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    ckpt = request.getfixturevalue(f"{which}_ckpt")
    metrics, objects = export(export_cfg(tmp_path, ckpt, "onnx"))
    assert objects["path"] == tmp_path / "model.onnx"
    assert metrics["max_abs_diff"] < 1e-4  # export's own check (batch of 3)
    images, expected = reference(ckpt)
    exported = run_onnx(objects["path"], images)
    assert list(exported) == (list(MULTIHEAD) if which == "multi" else ["label"])
    assert_same(exported, expected)
    assert_same(run_onnx(objects["path"], images[:1]), {h: v[:1] for h, v in expected.items()})

    import onnx

    props = {p.key: p.value for p in onnx.load(str(objects["path"])).metadata_props}
    assert (
        json.loads(props["lhte"])["class_names"]
        == json.loads(objects["metadata_path"].read_text())["class_names"]
    )


@pytest.mark.parametrize("which", ["single", "multi"])
def test_torch_export_matches_lightning(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ckpt = request.getfixturevalue(f"{which}_ckpt")
    out = tmp_path / "custom" / "classifier.pt2"
    _, objects = export(
        export_cfg(tmp_path, ckpt, "torch_export", f"output_path={out}", "check=false")
    )
    assert objects["path"] == out and out.is_file()
    images, expected = reference(ckpt, batch_size=7)
    program = torch.export.load(str(out))
    with torch.no_grad():
        assert_same(dict(program.module()(images)), expected)
    meta = json.loads(objects["metadata_path"].read_text())
    assert meta["outputs"] == list(expected) and meta["format"] == "torch_export"
    assert meta["input_shape"] == [1, 28, 28]


def test_export_rejects_unknown_format(single_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format='tflite' is not one of"):
        export(export_cfg(tmp_path, single_ckpt, "tflite"))


@pytest.mark.slow
@needs_onnxruntime
@pytest.mark.parametrize(
    "model", ["mnist_cnn_8k", "mnist_convnext_18k", "mnist_vit_38k", "mnist_efficientnet_22k"]
)
def test_every_architecture_exports(model: str, tmp_path: Path) -> None:
    """Each backbone (untrained) exports to both formats with equal outputs."""
    from src.export import export_onnx, export_torch
    from src.models.build import instantiate_model

    module = instantiate_model(compose_config("train.yaml", [f"model={model}"]).model).eval()
    meta = {"input_shape": [1, 28, 28], "heads": dict(module.heads)}
    images = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = module.forward_heads(images)
    assert_same(run_onnx(export_onnx(module, meta, tmp_path / "m.onnx", None), images), expected)
    program = torch.export.load(str(export_torch(module, meta, tmp_path / "m.pt2")))
    with torch.no_grad():
        assert_same(dict(program.module()(images)), expected)
