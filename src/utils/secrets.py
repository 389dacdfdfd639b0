"""Keep secrets out of everything a run writes or prints.

A value is secret when its config key or environment variable name ends like a credential
(``api_key``, ``token``, ``secret``, ``password``, ``credentials``...). :func:`redact` masks
such values in a config or plain container, and also every occurrence of a secret value found
in the environment (``.env`` included: ``rootutils`` loads it into ``os.environ``) or under a
secret config key, wherever it appears (``url: https://u:${oc.env:DB_PASSWORD}@host``).
The config tree, logger hyperparameters and ``run_info.yaml`` all go through it.
"""

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

# Valid as a plain YAML scalar (a leading "*" would be read as an alias).
MASK = "<redacted>"

# The name must END with the credential word: `auth_token` and `WANDB_API_KEY` are secret,
# `token_dim` and `num_tokens` (model sizes) are not.
_SECRET_NAME = re.compile(
    r"(^|[_\-.])(api_?key|apikey|token|secret|secret_?key|access_?key|private_?key|"
    r"password|passwd|passphrase|credentials?)$",
    re.IGNORECASE,
)
# Shorter values ("1", "yes") would mask unrelated text; they are still masked by key name.
_MIN_SUBSTRING_LEN = 4


def is_secret_name(name: Any) -> bool:
    """Whether a config key or environment variable name looks like it holds a credential."""
    return isinstance(name, str) and bool(_SECRET_NAME.search(name))


def secret_env_values(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values of the environment variables whose name looks secret."""
    environ = os.environ if environ is None else environ
    return {v for k, v in environ.items() if is_secret_name(k) and v}


def _walk_secret_values(node: Any) -> Iterable[str]:
    """Yield the resolved values under secret-named keys of a config, skipping unresolvable ones."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            try:
                value = node[key]
            except Exception:  # e.g. ${hydra:...} outside a Hydra run, or a missing env var
                continue
            if is_secret_name(key) and isinstance(value, str | int) and not isinstance(value, bool):
                yield str(value)
            elif isinstance(value, DictConfig | ListConfig):
                yield from _walk_secret_values(value)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            try:
                value = node[i]
            except Exception:
                continue
            if isinstance(value, DictConfig | ListConfig):
                yield from _walk_secret_values(value)
    elif isinstance(node, Mapping):
        for key, value in node.items():
            if is_secret_name(key) and isinstance(value, str | int) and not isinstance(value, bool):
                yield str(value)
            else:
                yield from _walk_secret_values(value)
    elif isinstance(node, list | tuple):
        for value in node:
            yield from _walk_secret_values(value)


def collect_secrets(cfg: Any = None, environ: Mapping[str, str] | None = None) -> set[str]:
    """Every secret value to mask: secret environment variables plus secret config keys."""
    found = secret_env_values(environ)
    if cfg is not None:
        found |= {v for v in _walk_secret_values(cfg) if v}
    return found


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret value in ``text`` by the mask."""
    # Longest first, so a secret that contains another one is masked whole.
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SUBSTRING_LEN:
            text = text.replace(secret, MASK)
    return text


def _redact_plain(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, Mapping):
        return {
            k: MASK
            if is_secret_name(k) and isinstance(v, str | int) and not isinstance(v, bool)
            else _redact_plain(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_plain(v, secrets) for v in value]
    if isinstance(value, str):
        return MASK if value in secrets else redact_text(value, secrets)
    return value


def to_redacted_container(cfg: Any) -> Any:
    """Resolve a config as far as possible into plain data, leaving unresolvable leaves as text."""
    if isinstance(cfg, DictConfig):
        out = {}
        for key in cfg.keys():
            try:
                out[key] = to_redacted_container(cfg[key])
            except Exception:  # keep the interpolation text rather than fail the whole run
                out[key] = OmegaConf.to_container(cfg, resolve=False)[key]
        return out
    if isinstance(cfg, ListConfig):
        return [to_redacted_container(v) for v in cfg]
    return cfg


def redact(value: Any, secrets: Iterable[str] | None = None, resolve: bool = True) -> Any:
    """Return a plain copy of ``value`` (config or container) with secrets masked.

    :param value: A ``DictConfig``/``ListConfig`` or plain dicts/lists/strings.
    :param secrets: Secret values to mask; default: :func:`collect_secrets` of ``value``.
    :param resolve: Resolve interpolations (those that fail stay as text).
    :return: Plain data (dicts, lists, scalars) safe to print, log or save.
    """
    found = collect_secrets(value) if secrets is None else set(secrets)
    if OmegaConf.is_config(value):
        plain = to_redacted_container(value) if resolve else OmegaConf.to_container(value)
    else:
        plain = value
    return _redact_plain(plain, found)
