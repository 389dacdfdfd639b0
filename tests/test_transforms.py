"""The in-memory batch pipeline behaves like the per-sample torchvision pipeline."""

import pytest
import torch
from lightning import seed_everything

from src.data.components.memory import InMemoryImages
from src.data.components.transforms import BatchTransform, per_sample_transform

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def random_images(n: int = 64, size: int = 32) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def per_sample(images: torch.Tensor, **augment) -> torch.Tensor:
    t = per_sample_transform(MEAN, STD, train=True, **augment)
    return torch.stack([t(img) for img in images])


def test_without_augmentation_equals_per_sample_path() -> None:
    images = random_images()
    batch = BatchTransform(MEAN, STD, crop_padding=4, hflip=True)(images, train=False)
    expected = torch.stack(
        [
            per_sample_transform(MEAN, STD, crop_padding=4, hflip=True, train=False)(i)
            for i in images
        ]
    )
    torch.testing.assert_close(batch, expected)


def test_in_memory_dataset_batches_equal_items() -> None:
    images, labels = random_images(10), torch.arange(10)
    data = InMemoryImages(images, {"a": labels, "b": labels * 2})
    x, y = data.__getitems__([3, 7])
    assert torch.equal(x, images[[3, 7]])
    assert y["a"].tolist() == [3, 7] and y["b"].tolist() == [6, 14]


@pytest.mark.parametrize(
    "augment",
    [{"crop_padding": 4}, {"hflip": True}, {"degrees": 10, "translate": 0.1, "scale": [0.9, 1.1]}],
)
def test_augmentation_keeps_shape_dtype_and_label_alignment(augment: dict) -> None:
    """Each image is constant (its index); after augmentation its centre still holds that value."""
    n = 32
    images = (
        torch.arange(n, dtype=torch.uint8).mul(7).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    )
    out = BatchTransform(MEAN, STD, **augment)(images, train=True)
    assert out.shape == images.shape and out.dtype == torch.float32
    centre = out[:, :, 16, 16] * torch.tensor(STD) + torch.tensor(MEAN)
    torch.testing.assert_close(centre, images[:, :, 16, 16].float() / 255, atol=1e-3, rtol=0)


def test_augmentation_only_when_training() -> None:
    images = random_images()
    t = BatchTransform(MEAN, STD, crop_padding=4, hflip=True)
    assert torch.equal(t(images, train=False), t.normalize(images))
    assert not torch.equal(t(images, train=True), t.normalize(images))


def test_augmentation_is_deterministic_with_a_seed() -> None:
    images = random_images()
    t = BatchTransform(MEAN, STD, crop_padding=4, hflip=True, degrees=10)
    seed_everything(3)
    a = t(images, train=True)
    seed_everything(3)
    b = t(images, train=True)
    assert torch.equal(a, b)


@pytest.mark.parametrize("augment", [{"crop_padding": 4}, {"hflip": True}])
def test_same_statistics_as_per_sample_path(augment: dict) -> None:
    """Zero-padded area (crop) and flip rate match torchvision's per-sample transforms."""
    n = 2000
    # White image with a black left half: crops reveal black borders, flips move the black half.
    images = torch.full((n, 3, 32, 32), 255, dtype=torch.uint8)
    images[..., :16] = 0
    seed_everything(0)
    batch = BatchTransform([0.0] * 3, [1.0] * 3, **augment)(images, train=True)
    ref = per_sample(images, **augment) * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(
        3, 1, 1
    )
    black_batch = (batch < 0.5).float().mean()
    black_ref = (ref < 0.5).float().mean()
    assert abs(float(black_batch - black_ref)) < 0.01
    left_black_batch = (batch[..., 8] < 0.5).float().mean()
    left_black_ref = (ref[..., 8] < 0.5).float().mean()
    assert abs(float(left_black_batch - left_black_ref)) < 0.05
