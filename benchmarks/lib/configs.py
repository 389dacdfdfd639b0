"""The project as the benchmarks see it: its root, its composed configs, datamodules and models.

Configs are composed through ``configs/train.yaml`` exactly as ``python src/train.py ...`` does,
so the numbers belong to the configs users run.
"""

import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))  # what rootutils sets in src/train.py


def compose_train(overrides: list[str], return_hydra_config: bool = False) -> Any:
    """``configs/train.yaml`` composed with Hydra ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()  # a caller may have left Hydra initialized
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=return_hydra_config)


def compose_model(model: str, overrides: list[str]) -> Any:
    """``train.yaml`` for ``model=<name>`` with its dataset (CIFAR-10 for ``cifar10*`` models,
    else MNIST) and no learning-rate schedule: the optimizer's constant rate, as a plain loop has."""
    data = "cifar10" if model.startswith("cifar10") else "mnist"
    return compose_train([f"model={model}", f"data={data}", "model.scheduler=null", *overrides])


def fitted_model(model_cfg: Any, data: Any) -> Any:
    """The LightningModule of ``model_cfg`` with its unset shape keys filled from ``data``
    (anything with ``input_shape`` and ``heads``), as ``src/train.py`` builds it."""
    from src.models.build import fit_model_config, instantiate_model

    return instantiate_model(fit_model_config(model_cfg, data))


def count_parameters(module: Any) -> int:
    """Trainable parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def build_datamodule(cfg: Any) -> tuple[Any, str]:
    """The configured datamodule and ``"real"``, or fake CIFAR-10 and ``"fake"`` when the
    official CIFAR-10 files are missing (nothing is downloaded)."""
    import hydra

    if cfg.data._target_.endswith("CIFAR10DataModule"):
        from src.data.cifar10_datamodule import CIFAR10DataModule

        real = hydra.utils.instantiate(cfg.data, download=False)
        if not real.files_present():
            kwargs = {k: v for k, v in cfg.data.items() if k != "_target_"}
            return fake_cifar10_datamodule(**kwargs), "fake"
        assert isinstance(real, CIFAR10DataModule)
        return real, "real"
    return hydra.utils.instantiate(cfg.data), "real"


def fake_cifar10_datamodule(**kwargs: Any) -> Any:
    """CIFAR-10 datamodule serving random uint8 images (official sizes): throughput only."""
    import torch

    from src.data.cifar10_datamodule import CIFAR10DataModule

    class FakeCIFAR10(CIFAR10DataModule):
        """CIFAR-10 shaped random uint8 images and labels (official sizes), for throughput only."""

        def prepare_data(self) -> None:
            """Nothing to fetch."""

        def _read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
            # Only as many images as the split asks for (the official sizes by default).
            n_train, n_val, n_test = self.hparams.train_val_test_split or (45_000, 5_000, 10_000)
            n = n_train + n_val if train else n_test
            gen = torch.Generator().manual_seed(int(train))
            images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
            return images, torch.randint(0, 10, (n,), generator=gen)

    return FakeCIFAR10(**kwargs)
