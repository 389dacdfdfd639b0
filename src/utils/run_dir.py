"""A unique suffix for run folders: ``${run_suffix:}`` in ``configs/hydra/default.yaml``.

Hydra names run folders by the time, to the second, so runs started in the same second (job
arrays, shell loops) shared one folder. The suffix is 6 random hex characters (16.7 million
values), from the OS's random source, so it differs across processes and machines without
any coordination. The resolver is cached: every use within one config (and, since Hydra copies
the cache, in every job of a multirun) reads the same value.
"""

import secrets

from omegaconf import OmegaConf

RESOLVER = "run_suffix"


def new_run_suffix() -> str:
    """A fresh random suffix such as ``3fa9c1``."""
    return secrets.token_hex(3)


def register_run_suffix_resolver() -> None:
    """Register ``${run_suffix:}`` with OmegaConf (idempotent); call before Hydra composes."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, new_run_suffix, use_cache=True)
