"""The one plotting helper of comparisons and reports: line charts in one or more panels, saved as PNG.

Every figure of `mot compare`, `mot demo` and the suite reports goes through `plot_panels`, so they share one look
(grid, legend, size, resolution) and one place to change it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Series:
    """One line. Series with the same `group` share a colour (e.g. a run's train and eval curves)."""

    label: str | None
    x: Sequence[float]
    y: Sequence[float]
    group: str = ""
    marker: str = ""
    linestyle: str = "-"
    linewidth: float = 1.4
    alpha: float = 1.0


@dataclass(frozen=True)
class Panel:
    """One set of axes."""

    title: str
    xlabel: str
    ylabel: str
    series: Sequence[Series]
    hlines: Sequence[tuple[float, str]] = ()
    """Horizontal reference lines: (y, label)."""
    vlines: Sequence[tuple[float, str]] = ()
    """Vertical reference lines: (x, label)."""
    logx: bool = False
    ylim: tuple[float, float] | None = None
    legend: bool = True
    notes: Sequence[str] = field(default_factory=tuple)
    """Lines of small text in the lower left corner."""


def plot_panels(
    panels: Sequence[Panel], path: Path, *, title: str = "", columns: int = 2, groups: Sequence[str] = ()
) -> Path:
    """Draw `panels` side by side (`columns` per row) and save the figure to `path` (PNG); returns `path`.
    `groups` fixes the colour order, so the same model has the same colour in every figure of a report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("plot_panels needs at least one panel.")
    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    figure, axes_grid = plt.subplots(rows, columns, figsize=(6.4 * columns, 4.4 * rows), squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(groups) > len(palette):  # more models than colours: pairs of shades, never a repeat
        palette = [matplotlib.colors.to_hex(c) for c in plt.get_cmap("tab20").colors]
    colors: dict[str, str] = {group: palette[i % len(palette)] for i, group in enumerate(groups)}
    for index, panel in enumerate(panels):
        axes = axes_grid[index // columns][index % columns]
        for series in panel.series:
            if not len(series.x):
                continue
            key = series.group or f"{index}:{series.label}"
            color = colors.setdefault(key, palette[len(colors) % len(palette)])
            axes.plot(
                list(series.x),
                list(series.y),
                label=series.label,
                color=color,
                marker=series.marker or None,
                markersize=4,
                linestyle=series.linestyle,
                linewidth=series.linewidth,
                alpha=series.alpha,
            )
        for y, label in panel.hlines:
            axes.axhline(y, color="gray", linestyle="--", linewidth=0.8, label=label)
        for x, label in panel.vlines:
            axes.axvline(x, color="gray", linestyle=":", linewidth=0.9, label=label)
        if panel.logx:
            axes.set_xscale("log")
        if panel.ylim is not None:
            axes.set_ylim(*panel.ylim)
        axes.set_title(panel.title, fontsize=10)
        axes.set_xlabel(panel.xlabel)
        axes.set_ylabel(panel.ylabel)
        axes.grid(alpha=0.3, which="both")
        if panel.notes:
            axes.text(0.01, 0.01, "\n".join(panel.notes), transform=axes.transAxes, fontsize=7, va="bottom")
        if panel.legend and axes.get_legend_handles_labels()[1]:
            axes.legend(fontsize=7)
    for index in range(len(panels), rows * columns):
        axes_grid[index // columns][index % columns].axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


OUTLIER_SPAN = 4.0
"""A loss is an extreme outlier when it lies more than this many times the spread of the lower three quarters of
the values above the lowest one (a diverged start, the loss of an untrained model)."""


def loss_ylim(values: Sequence[float], *, floor: float | None = None) -> tuple[tuple[float, float] | None, str]:
    """A y range that shows every point, first ones included: from a little below the lowest value to a little
    above the highest. Only extreme outliers are cut (values more than OUTLIER_SPAN times the spread of the lower
    three quarters above the lowest; never with fewer than 8 values), and then the second item is a note saying how
    many points lie above the range, for the panel. Returns (None, "") without finite values."""
    finite = sorted(v for v in values if v == v and abs(v) != float("inf"))
    if not finite:
        return None, ""
    low = finite[0] if floor is None else min(finite[0], floor)
    high, note = finite[-1], ""
    if len(finite) >= 8:
        bound = low + OUTLIER_SPAN * (finite[int(0.75 * (len(finite) - 1))] - low)
        shown = [v for v in finite if v <= bound]
        if len(shown) < len(finite):
            high = shown[-1]
            hidden = len(finite) - len(shown)
            note = f"{hidden} outlying point(s) above {high:.3g} not shown (highest {finite[-1]:.3g})"
    span = max(high - low, 1e-3)
    return (low - 0.05 * span, high + 0.05 * span), note
