"""Parameter counts of every model size preset (``configs/model/net/<family>_*.yaml``)."""

from typing import Any

from benchmarks.lib.configs import ROOT, compose_train, count_parameters, fitted_model
from benchmarks.lib.report import markdown_table

#: The shapes the presets are counted on, as a datamodule reports them (``fit_model_config``).
PRESET_DATA = {
    "MNIST": {"input_shape": (1, 28, 28), "heads": {"label": 10}},
    "CIFAR-10": {"input_shape": (3, 32, 32), "heads": {"label": 10}},
}


def compose(family: str, overrides: list[str], hydra_node: bool = False) -> Any:
    """``train.yaml`` with ``model=<family>``, MNIST data and the extra overrides."""
    return compose_train([f"model={family}", "data=mnist", *overrides], hydra_node)


def preset_rows(families: dict[str, str], overrides: list[str]) -> list[dict[str, Any]]:
    """Every size preset of ``configs/model/net/`` in its family config (``families``: config
    name -> family name), counted on MNIST and CIFAR-10 shapes (``None`` with a note where the
    preset does not fit the shape)."""
    from types import SimpleNamespace

    from hydra.errors import InstantiationException

    rows = []
    for family, label in families.items():
        default = compose(family, overrides, hydra_node=True).hydra.runtime.choices["model/net"]
        family_rows = []
        for preset in sorted((ROOT / "configs" / "model" / "net").glob(f"{family}_*.yaml")):
            cfg = compose(family, [f"model/net={preset.stem}", *overrides])
            row: dict[str, Any] = {"family": label, "config": family, "preset": preset.stem}
            row["default"] = preset.stem == default
            for data, shape in PRESET_DATA.items():
                try:
                    model = fitted_model(cfg.model, SimpleNamespace(**shape))
                except InstantiationException as err:  # e.g. a 7x7 patch on 32 px images
                    row[data], row[f"{data} note"] = None, str(err.__cause__ or err).split(";")[0]
                    continue
                row[data] = count_parameters(model.net)
            family_rows.append(row)
        rows += sorted(family_rows, key=lambda r: r["MNIST"])
    return rows


def presets_markdown(rows: list[dict[str, Any]]) -> str:
    """Render the preset rows: one line per family config and preset, counts per dataset."""
    header = ["Family", "Config", "Preset (`model/net=`)", *(f"{d} params" for d in PRESET_DATA)]
    cells = []
    for r in rows:
        preset = f"`{r['preset']}`" + (" (default)" if r["default"] else "")
        counts = [
            f"{r[d]:,}" if r[d] is not None else f"n/a ({r[d + ' note']})" for d in PRESET_DATA
        ]
        cells.append([r["family"], f"`model={r['config']}`", preset, *counts])
    return "\n".join(markdown_table(header, cells))
