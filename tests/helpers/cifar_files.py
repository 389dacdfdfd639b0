"""Write tiny CIFAR datasets in the exact official on-disk formats, and tiny image folders.

The official "python version" files are Python 2 pickles: read in Python 3 with
``encoding="bytes"`` their keys and strings are ``bytes``. These writers use bytes keys and
values the same way, the same file names and folder names, and the same row layout (3072 bytes:
the red plane, then green, then blue, each 32x32 row-major), so the code under test reads them
exactly like the real files.
"""

import pickle
from pathlib import Path

import numpy as np
import torch

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

# The official CIFAR-100 superclasses, each with its five fine classes.
CIFAR100_GROUPS = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
CIFAR100_COARSE = list(CIFAR100_GROUPS)
CIFAR100_FINE = sorted(name for names in CIFAR100_GROUPS.values() for name in names)
# fine class index -> coarse class index, as in the official files.
FINE_TO_COARSE = [
    next(c for c, names in enumerate(CIFAR100_GROUPS.values()) if fine in names)
    for fine in CIFAR100_FINE
]


def _dump(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=2)


def _images(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Random uint8 images ``(N, 3, 32, 32)`` whose mean colour depends on the label (learnable)."""
    base = rng.integers(0, 96, size=(len(labels), 3, 32, 32))
    tint = (labels[:, None] * np.array([37, 71, 113])) % 160
    return (base + tint[:, :, None, None]).astype(np.uint8)


def write_cifar10(root: str | Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> dict:
    """Write ``root/cifar-10-batches-py`` with ``n_train`` images over five batches.

    :return: The written arrays: ``train_images`` ``(N, 3, 32, 32)``, ``train_labels``,
        ``test_images``, ``test_labels`` (numpy).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n)
        out[f"{split}_images"], out[f"{split}_labels"] = _images(rng, labels), labels
    chunks = np.array_split(np.arange(n_train), 5)
    for i, idx in enumerate(chunks, start=1):
        _dump(
            folder / f"data_batch_{i}",
            {
                b"batch_label": f"training batch {i} of 5".encode(),
                b"labels": [int(v) for v in out["train_labels"][idx]],
                b"data": out["train_images"][idx].reshape(len(idx), 3072),
                b"filenames": [f"img_{j}.png".encode() for j in idx],
            },
        )
    _dump(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(v) for v in out["test_labels"]],
            b"data": out["test_images"].reshape(n_test, 3072),
            b"filenames": [f"test_{j}.png".encode() for j in range(n_test)],
        },
    )
    _dump(
        folder / "batches.meta",
        {
            b"num_cases_per_batch": 10000,
            b"label_names": [c.encode() for c in CIFAR10_CLASSES],
            b"num_vis": 3072,
        },
    )
    return out


def write_cifar100(root: str | Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> dict:
    """Write ``root/cifar-100-python`` (``train``, ``test``, ``meta``) with consistent labels.

    :return: ``{split}_images``, ``{split}_fine``, ``{split}_coarse`` (numpy).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, size=n)
        coarse = np.array(FINE_TO_COARSE)[fine]
        images = _images(rng, fine)
        out.update({f"{split}_images": images, f"{split}_fine": fine, f"{split}_coarse": coarse})
        _dump(
            folder / split,
            {
                b"filenames": [f"{split}_{j}.png".encode() for j in range(n)],
                b"batch_label": f"{split}ing batch 1 of 1".encode(),
                b"fine_labels": [int(v) for v in fine],
                b"coarse_labels": [int(v) for v in coarse],
                b"data": images.reshape(n, 3072),
            },
        )
    _dump(
        folder / "meta",
        {
            b"fine_label_names": [c.encode() for c in CIFAR100_FINE],
            b"coarse_label_names": [c.encode() for c in CIFAR100_COARSE],
        },
    )
    return out


def write_image_folder(
    root: str | Path,
    classes: tuple[str, ...] = ("cat", "dog", "frog"),
    per_class: dict[str, int] | None = None,
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
) -> Path:
    """Write ``root/<split>/<class>/<i>.png`` images (PNG: lossless, so values can be checked).

    :param per_class: Images per class for each split, default ``{train: 6, test: 2}``.
    """
    from torchvision.io import write_png

    rng = torch.Generator().manual_seed(seed)
    per_class = per_class or {"train": 6, "test": 2}
    for split, n in per_class.items():
        for c, name in enumerate(classes):
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image = torch.randint(0, 200, (3, *size), generator=rng, dtype=torch.uint8) + c * 20
                write_png(image, str(folder / f"{i:04d}.png"))
    return Path(root)
