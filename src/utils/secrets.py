"""Keep secrets out of everything a run writes or prints.

A value is secret when its config key or environment variable name ends like a credential
(``api_key``, ``token``, ``secret``, ``password``, ``DB_PASS``, ``GITHUB_PAT``, ``credentials``...).
The password of a URL (``postgresql://user:password@host/db``, any scheme) is masked in any
text, the rest of the URL kept; such passwords found in the environment (``DATABASE_URL``) or
the config are masked wherever they reappear. :func:`redact` masks
such values in a config or plain container, and also every occurrence of a secret value found
in the environment (``.env`` included: ``rootutils`` loads it into ``os.environ``) or under a
secret config key, wherever it appears (``url: https://u:${oc.env:DB_PASSWORD}@host``).
The config tree, logger hyperparameters and ``run_info.yaml`` all go through it.
"""

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from omegaconf import DictConfig, ListConfig, OmegaConf

# Valid as a plain YAML scalar (a leading "*" would be read as an alias).
MASK = "<redacted>"

# The name must END with the credential word, split at `_`, `-`, `.` or a camelCase hump:
# `auth_token`, `WANDB_API_KEY`, `dbPassword` are secret; `token_dim`, `num_keys`, `patch_size`,
# `pass_through`, `passes` (model sizes, flags) are not.
_SECRET_NAME = re.compile(
    r"(^|[_\-.])(api_?key|apikey|token|secret|password|passwd|passphrase|credentials?)$"
    # Short words that mean something else alone (`PWD` is the working directory): only after
    # another word, as in `DB_PASS`, `GITHUB_PAT`, `DB_PWD`, `AWS_SECRET_ACCESS_KEY`.
    r"|[a-z0-9][_\-.](key|pass|pwd|pat)$",
    re.IGNORECASE,
)
# `scheme://user:password@host`, any scheme (postgresql, mysql+pymysql, redis, https...).
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s:/@'\"]*):(?P<pw>[^\s@'\"]+)@", re.I
)
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Shorter values ("1", "yes") would mask unrelated text; they are still masked by key name.
_MIN_SUBSTRING_LEN = 4


def is_secret_name(name: Any) -> bool:
    """Whether a config key or environment variable name looks like it holds a credential."""
    return isinstance(name, str) and bool(_SECRET_NAME.search(_CAMEL_HUMP.sub("_", name)))


def url_passwords(text: str) -> set[str]:
    """Passwords written in URLs inside ``text`` (``scheme://user:password@host``), raw and decoded."""
    found = set()
    for match in _URL_PASSWORD.finditer(text):
        found |= {match["pw"], unquote(match["pw"])}
    return {pw for pw in found if pw != MASK}


def mask_url_passwords(text: str) -> str:
    """Replace the password of every URL in ``text`` by the mask, keeping user, host and path."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)


def secret_env_values(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values of the environment variables whose name looks secret, and passwords in URL values."""
    environ = os.environ if environ is None else environ
    found = {v for k, v in environ.items() if is_secret_name(k) and v}
    for value in environ.values():  # DATABASE_URL, REDIS_DSN...: their password only
        if "://" in value:
            found |= url_passwords(value)
    return found


def _walk_secret_values(node: Any) -> Iterable[str]:
    """Yield the resolved values under secret-named keys of a config, skipping unresolvable ones.

    Passwords of URLs in any value are yielded too, so they are masked wherever they reappear.
    """
    if isinstance(node, str):
        yield from url_passwords(node)
    elif isinstance(node, DictConfig):
        for key in node.keys():
            try:
                value = node[key]
            except Exception:  # e.g. ${hydra:...} outside a Hydra run, or a missing env var
                continue
            if is_secret_name(key) and isinstance(value, str | int) and not isinstance(value, bool):
                yield str(value)
            elif isinstance(value, DictConfig | ListConfig | str):
                yield from _walk_secret_values(value)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            try:
                value = node[i]
            except Exception:
                continue
            if isinstance(value, DictConfig | ListConfig | str):
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


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask URL passwords and every occurrence of each secret value in ``text``."""
    text = mask_url_passwords(text)
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


_LOG_SECRETS: set[str] = set()


def redact_log_records(secrets: Iterable[str] = ()) -> None:
    """Mask URL passwords and ``secrets`` in every log record of this process from now on.

    A record factory, not a handler filter: Hydra rebuilds the handlers for each job, the
    factory stays. Records are masked once, before any handler (console, ``<task>.log``) sees them.
    """
    _LOG_SECRETS.update(secrets)
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_lhte_redacting", False):
        return

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let logging report it as usual
            return record
        masked = redact_text(message, _LOG_SECRETS)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    redacting_factory._lhte_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)
