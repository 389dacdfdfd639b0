"""One definition of the ``data.augment`` keys reaches the batch and the per-sample pipeline."""

import dataclasses
import pickle

import pytest
import torch
from lightning import seed_everything
from omegaconf import OmegaConf
from torchvision.transforms import v2

from src.data.components.augment_spec import AugmentSpec, PadCrop, augment_keys
from src.data.components.transforms import BatchTransform, per_sample_transform

MEAN, STD = [0.5], [0.25]
ALL_KEYS = {
    "crop_padding": 3,
    "hflip": True,
    "degrees": 12,
    "translate": 0.2,
    "scale": [0.8, 1.2],
    "policy": "RandAugment",
    "policy_kwargs": {"num_ops": 3},
    "random_erasing": 0.4,
}


def test_one_spec_reaches_both_paths_with_the_same_parameters() -> None:
    spec = AugmentSpec.from_config(ALL_KEYS)
    batch = BatchTransform(MEAN, STD, spec=spec)
    assert batch.spec is spec
    ops = {type(op): op for op in batch.per_sample(train=True).transforms}

    assert batch.crop_padding == ops[PadCrop].padding == 3
    assert batch.hflip and ops[v2.RandomHorizontalFlip].p == 0.5
    affine = ops[v2.RandomAffine]
    assert affine.degrees == [-batch.degrees, batch.degrees] == [-12.0, 12.0]
    assert affine.translate == (batch.translate, batch.translate) == (0.2, 0.2)
    assert affine.scale == batch.scale == (0.8, 1.2)
    assert batch.policy_name == "randaugment"
    assert isinstance(batch.policy, v2.RandAugment) and batch.policy.num_ops == 3
    assert ops[v2.RandAugment].num_ops == 3
    assert batch.erasing.p == ops[v2.RandomErasing].p == batch.random_erasing == 0.4

    # The keyword form of the per-sample path parses the keys through the same spec.
    by_keys = per_sample_transform(MEAN, STD, train=True, **ALL_KEYS).transforms
    assert [repr(op) for op in by_keys] == [repr(op) for op in ops.values()]
    assert BatchTransform(MEAN, STD, **ALL_KEYS).spec == spec


def _bright_pixel_offsets(out: torch.Tensor, centre: int) -> tuple[set[int], set[int]]:
    flat = out.flatten(1).argmax(1)
    rows, cols = flat // out.shape[-1], flat % out.shape[-1]
    return set((rows - centre).tolist()), set((cols - centre).tolist())


def test_crop_padding_moves_images_by_the_same_pixels_on_both_paths() -> None:
    """A single bright pixel lands up to ``crop_padding`` pixels away, on every offset."""
    n, size, pad = 400, 15, 2
    images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    images[..., size // 2, size // 2] = 255
    spec = AugmentSpec.from_config({"crop_padding": pad})
    seed_everything(0)
    batch = BatchTransform(MEAN, STD, spec=spec)(images, train=True)
    per_sample = BatchTransform(MEAN, STD, spec=spec).per_sample(train=True)
    lazy = torch.stack([per_sample(image) for image in images])
    expected = set(range(-pad, pad + 1))
    assert _bright_pixel_offsets(batch, size // 2) == (expected, expected)
    assert _bright_pixel_offsets(lazy, size // 2) == (expected, expected)


def test_values_are_parsed_once_from_hydra_config() -> None:
    config = OmegaConf.create({"crop_padding": 4.0, "scale": [1, 2], "policy": "AugMix"})
    spec = AugmentSpec.from_config(config)
    assert (spec.crop_padding, spec.scale, spec.policy) == (4, (1.0, 2.0), "augmix")
    assert type(spec.crop_padding) is int and spec.policy_kwargs == {}
    assert AugmentSpec.from_config(spec) is spec
    assert pickle.loads(pickle.dumps(spec)) == spec  # travels to DataLoader workers
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.crop_padding = 2  # type: ignore[misc]


def test_defaults_are_off_and_the_keys_are_the_fields() -> None:
    assert AugmentSpec.from_config(None) == AugmentSpec() == AugmentSpec.from_config({})
    assert not AugmentSpec().augments and not BatchTransform(MEAN, STD).augments
    assert AugmentSpec().uint8_ops() == [] and AugmentSpec().erasing_op() is None
    assert augment_keys() == list(ALL_KEYS)


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        ({"crop_padding": -1}, r"data\.augment\.crop_padding=-1 is zero padding in pixels"),
        ({"crop_padding": 2.5}, r"data\.augment\.crop_padding=2\.5 .*whole number"),
        ({"crop_padding": "four"}, r"data\.augment\.crop_padding='four'"),
        ({"degrees": -5}, r"data\.augment\.degrees=-5 is the largest rotation"),
        ({"translate": 1.5}, r"data\.augment\.translate=1\.5 .*\[0, 1\]"),
        ({"scale": [1.2, 0.8]}, r"data\.augment\.scale=\[1\.2, 0\.8\] .*0 < min <= max"),
        ({"scale": [0.9]}, r"data\.augment\.scale=\[0\.9\]"),
        ({"random_erasing": -0.5}, r"data\.augment\.random_erasing=-0\.5"),
    ],
)
def test_bad_value_fails_the_same_way_on_both_paths(augment: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchTransform(MEAN, STD, **augment)
    with pytest.raises(ValueError, match=message):
        per_sample_transform(MEAN, STD, train=False, **augment)


def test_misspelt_key_is_named_on_the_per_sample_path_too() -> None:
    with pytest.raises(ValueError, match=r"data\.augment has unknown key\(s\) \['hflp'\]"):
        per_sample_transform(MEAN, STD, hflp=True)


def test_spec_and_keys_together_are_refused() -> None:
    with pytest.raises(ValueError, match="AugmentSpec or augment keys, not both"):
        BatchTransform(MEAN, STD, spec=AugmentSpec(), hflip=True)
