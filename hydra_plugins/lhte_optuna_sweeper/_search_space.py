"""Translate Hydra sweep overrides into Optuna distributions, and trial values back.

=========================================  =====================================================
Hydra override                             Optuna distribution
=========================================  =====================================================
``interval(0.0001, 0.1)``                  ``FloatDistribution(0.0001, 0.1)``
``tag(log, interval(0.0001, 0.1))``        ``FloatDistribution(0.0001, 0.1, log=True)``
``int(interval(8, 64))``                   ``IntDistribution(8, 64)`` (``tag(log, ...)`` works too)
``range(1, 10, 3)``                        ``IntDistribution(1, 7, step=3)`` (values 1, 4, 7)
``choice(32, 64, 128)`` or ``32,64,128``   ``CategoricalDistribution((32, 64, 128))``
``5`` (no sweep)                           not searched: passed unchanged to every trial
=========================================  =====================================================
"""

from dataclasses import dataclass, field

from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

# values Optuna can store in a categorical distribution
_PRIMITIVES = (bool, int, float, str, type(None))


@dataclass
class SearchSpace:
    """The searched parameters and the overrides every trial shares."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # key -> override as typed
    verbatim: set[str] = field(default_factory=set)  # choices stored as override strings

    def add(self, override: Override) -> None:
        """Add one parsed override; a later override of the same key replaces an earlier one."""
        key = override.get_key_element()
        self.distributions.pop(key, None)
        self.fixed.pop(key, None)
        self.verbatim.discard(key)
        if not override.is_sweep_override():
            self.fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
            return
        value = override.value()
        if isinstance(value, ChoiceSweep):
            choices = list(value.list)
            if not all(isinstance(c, _PRIMITIVES) for c in choices):
                # lists/dicts cannot be Optuna choices: search over their override strings
                choices = [Override._get_value_element_as_str(c) for c in choices]
                self.verbatim.add(key)
            self.distributions[key] = CategoricalDistribution(choices)
        elif isinstance(value, RangeSweep):
            self.distributions[key] = _range_distribution(key, value)
        elif isinstance(value, IntervalSweep):
            self.distributions[key] = _interval_distribution(value)
        else:
            raise HydraException(
                f"The Optuna sweeper cannot search '{override.input_line}': use interval(a, b), "
                "int(interval(a, b)), tag(log, interval(a, b)), range(a, b, step) or choice(...)."
            )

    def overrides(self, params: dict[str, object]) -> list[str]:
        """Command-line overrides for one trial: the fixed ones, then the trial's parameters."""
        searched = [
            f"{key}={value if key in self.verbatim else Override._get_value_element_as_str(value)}"
            for key, value in params.items()
        ]
        return [*self.fixed.values(), *searched]


def _interval_distribution(value: IntervalSweep) -> BaseDistribution:
    log = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(value.start, value.end, log=log)
    return FloatDistribution(float(value.start), float(value.end), log=log)


def _range_distribution(key: str, value: RangeSweep) -> BaseDistribution:
    # Hydra's range() excludes `stop`, like Python's; Optuna's bounds are inclusive
    values = list(value.range())
    if not values:
        raise HydraException(f"'{key}={value}' is an empty range.")
    if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
        return IntDistribution(values[0], values[-1], step=value.step)
    return FloatDistribution(values[0], values[-1], step=value.step)
