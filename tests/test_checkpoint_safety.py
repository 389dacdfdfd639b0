"""Checkpoints from strangers: their stored configs build only allowed kinds, and carry no
absolute paths of the training machine."""

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from src.models.build import load_model_from_checkpoint
from src.models.classifier_module import METADATA_KEY
from src.utils.checkpoints import validate_checkpoint
from src.utils.local_paths import LOCAL_PATH, localize_paths, portable_paths
from src.utils.trusted_targets import UntrustedTargetError, check_trusted_config, trusted_kind

HOSTILE = [
    "src.utils.checkpoints.atomic_torch_save",
    "src.utils.provenance._write",
    "src.utils.checkpoints.os.system",
    "src.utils.provenance.subprocess.run",
    "builtins.exec",
    "builtins.open",
    "src.models.classifier_module.torch.save",  # a module reached through a project module
    "src.models.components.losses.instantiate_criterion",  # a project function, not a builder
    "torch.optim.Adam.step",
    "os.system",
]


def _craft(ckpt: Path, out: Path, edit: Any) -> Path:
    """A real checkpoint with its metadata changed by ``edit(metadata)``."""
    checkpoint = torch.load(ckpt, weights_only=True)
    edit(checkpoint[METADATA_KEY])
    torch.save(checkpoint, out)
    return out


def _files(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.mark.parametrize("target", HOSTILE)
def test_hostile_targets_refused_and_nothing_written(
    single_ckpt: Path, tmp_path: Path, target: str
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("intact")

    def aim(meta: dict) -> None:
        meta["model"]["net"] = {"_target_": target, "_args_": [{}, str(victim)]}

    crafted = _craft(single_ckpt, tmp_path / "crafted.ckpt", aim)
    before = _files(tmp_path)
    for load in (load_model_from_checkpoint, lambda p: validate_checkpoint(p, resume=True)):
        with pytest.raises(UntrustedTargetError) as err:
            load(crafted)
        assert "model.net._target_" in str(err.value) and target in str(err.value)
    assert _files(tmp_path) == before and victim.read_text() == "intact"


@pytest.mark.parametrize(
    "where",
    [
        lambda m, t: m["model"]["net"].__setitem__("heads", {"_target_": t}),
        lambda m, t: m["model"]["net"].setdefault("_args_", []).append({"_target_": t}),
        lambda m, t: m["model"]["optimizer"].__setitem__("params", [{"x": {"_target_": t}}]),
        lambda m, t: m["data"].__setitem__("_target_", t),
    ],
    ids=["nested-heads", "args", "list-in-kwargs", "data"],
)
def test_hostile_targets_anywhere_in_the_metadata(
    single_ckpt: Path, tmp_path: Path, where: Any
) -> None:
    target = "src.utils.checkpoints.atomic_torch_save"
    crafted = _craft(single_ckpt, tmp_path / "c.ckpt", lambda m: where(m, target))
    with pytest.raises(UntrustedTargetError, match=target):
        load_model_from_checkpoint(crafted)


@pytest.mark.parametrize("bad", [42, ["os.system"], {"a": 1}, None])
def test_non_string_target_refused(bad: Any) -> None:
    with pytest.raises(UntrustedTargetError, match=r"net\._target_ is .* not a dotted class"):
        check_trusted_config({"net": {"_target_": bad}}, "test")


def test_allowed_kinds() -> None:
    assert trusted_kind("torch.nn.CrossEntropyLoss") == "torch.nn layer or loss"
    assert trusted_kind("torch.optim.AdamW") == "optimizer"
    assert trusted_kind("torch.optim.lr_scheduler.OneCycleLR") == "learning-rate scheduler"
    assert trusted_kind("timm.create_model") == "builder function"
    assert trusted_kind("src.models.mnist_module.MNISTLitModule").startswith("LightningModule")
    # A partial optimizer, as configs/model/*.yaml store it, passes.
    check_trusted_config({"optimizer": {"_target_": "torch.optim.Adam", "_partial_": True}}, "t")


def test_normal_checkpoints_still_load(single_ckpt: Path, multi_ckpt: Path) -> None:
    for ckpt in (single_ckpt, multi_ckpt):
        module, meta = load_model_from_checkpoint(ckpt)
        out = module(torch.zeros(2, *meta["input_shape"]))
        heads = out if isinstance(out, dict) else {"digit": out}
        assert all(v.shape[0] == 2 for v in heads.values())
        assert validate_checkpoint(ckpt, resume=True) == ckpt


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_metadata_has_no_local_paths(single_ckpt: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    meta = torch.load(single_ckpt, weights_only=True)[METADATA_KEY]
    local = (str(single_ckpt.parents[2]), str(Path.home()), str(root), "/tmp")
    leaked = [s for s in _strings(meta) if s.startswith(local)]
    assert not leaked
    assert meta["data"]["data_dir"] in ("data/", LOCAL_PATH)


def test_portable_paths_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "project"
    stored = portable_paths(
        {"data_dir": str(root / "data") + "/", "archive": "/mnt/x.tgz", "n": 3}, root
    )
    assert stored == {"data_dir": "data/", "archive": LOCAL_PATH, "n": 3}
    here = localize_paths({"data_dir": LOCAL_PATH, "cache_dir": "cache"}, "/srv/p", "/srv/d")
    assert here == {"data_dir": "/srv/d", "cache_dir": "/srv/p/cache"}
    with pytest.raises(ValueError, match=r"\+data.archive="):
        localize_paths(copy.deepcopy(stored), "/srv/p", "/srv/d")
