"""Local weights files like those a user saves for offline fine-tuning."""

from pathlib import Path

import torch
from torch import nn


def timm_net(model_name: str = "resnet18", seed: int = 0) -> nn.Module:
    """A timm network with seeded random weights (a stand-in for pretrained ones)."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model(model_name)


def write_timm_weights(path: str | Path, model_name: str = "resnet18", seed: int = 0) -> nn.Module:
    """Save a timm network's state dict to ``path`` (``.safetensors`` or a torch file)."""
    net = timm_net(model_name, seed)
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(net.state_dict(), str(path))
    else:
        torch.save(net.state_dict(), path)
    return net
