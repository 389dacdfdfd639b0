"""A faster ``--help``.

Hydra's help lists every option of every config group, and for each group it asks for a fresh
view of the config repository, which deep-copies the whole search path: about 120 copies for
this project's groups, most of ``--help``'s time. The listing only reads the repository, so
during ``--help`` one view per set of overrides is built and reused.
"""

import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

HELP_FLAGS = ("--help", "-h", "--hydra-help")
#: Flags Hydra answers from the config alone, without running the task.
INFO_FLAGS = (*HELP_FLAGS, "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")


def wants_help(argv: Sequence[str]) -> bool:
    """Whether the command line ``argv`` asks Hydra for ``--help`` or ``--hydra-help``."""
    return any(flag in argv for flag in HELP_FLAGS)


def wants_info(argv: Sequence[str] | None = None) -> bool:
    """Whether ``argv`` (default ``sys.argv``) only asks Hydra about the config (help, ``--cfg``,
    ``--info``, shell completion): entry points that import their libraries at load time
    answer it before those imports."""
    words = sys.argv[1:] if argv is None else argv
    return any(w in INFO_FLAGS or w.startswith(("--cfg=", "--info=")) for w in words)


def answer_from_config(hydra_main: Callable[[], Any]) -> NoReturn:
    """Run ``hydra_main`` (a ``@hydra.main`` of a do-nothing task) for an info request, exit 0.

    The task must be defined in the entry file itself: Hydra names the job after that file.
    """
    speed_up_help()
    hydra_main()
    raise SystemExit(0)


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
