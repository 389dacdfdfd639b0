"""A faster ``--help``.

Hydra's help lists every option of every config group, and for each group it asks for a fresh
view of the config repository, which deep-copies the whole search path: about 120 copies for
this project's groups, most of ``--help``'s time. The listing only reads the repository, so
during ``--help`` one view per set of overrides is built and reused.
"""

import sys
from collections.abc import Sequence
from typing import Any

HELP_FLAGS = ("--help", "-h", "--hydra-help")


def wants_help(argv: Sequence[str]) -> bool:
    """Whether the command line ``argv`` asks Hydra for ``--help`` or ``--hydra-help``."""
    return any(flag in argv for flag in HELP_FLAGS)


def speed_up_help(argv: Sequence[str] | None = None) -> bool:
    """Reuse Hydra's repository view while it lists config groups, if ``argv`` asks for help.

    Only for help: a normal run composes once, and a reused view would not see config files
    that change while the process runs.

    :param argv: The command line (default ``sys.argv``).
    :return: Whether help was asked for (and the listing sped up).
    """
    if not wants_help(sys.argv[1:] if argv is None else argv):
        return False
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    build = ConfigLoaderImpl._parse_overrides_and_create_caching_repo
    if getattr(build, "reuses_views", False):
        return True
    views: dict[tuple[Any, ...], Any] = {}

    def reused(self: ConfigLoaderImpl, config_name: str | None, overrides: list[str]) -> Any:
        key = (id(self), config_name, tuple(overrides))
        if key not in views:
            views[key] = build(self, config_name, overrides)
        return views[key]

    reused.reuses_views = True  # type: ignore[attr-defined]
    ConfigLoaderImpl._parse_overrides_and_create_caching_repo = reused  # type: ignore[method-assign]
    return True
