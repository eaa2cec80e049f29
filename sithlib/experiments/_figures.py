"""Figure layout shared by the experiments' plots: the book shrinks every figure to its page
width, so panels go at most a few to a row, and a caller may pass axes of its own."""

from __future__ import annotations


def panel_grid(n: int, per_row: int, width: float, height: float, **subplots):
    """A figure of ``n`` panels, ``per_row`` to a row, each ``width`` x ``height`` inches
    (plus half an inch for a legend or labels below); returns the ``n`` axes, in reading
    order, with the unused ones of the last row hidden."""
    import matplotlib.pyplot as plt

    cols = min(per_row, n)
    rows = -(-n // cols)
    _, grid = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.5),
                           squeeze=False, **subplots)
    flat = grid.ravel()
    for ax in flat[n:]:
        ax.set_visible(False)
    return flat[:n]


def label_first_column(axes, ylabel: str) -> None:
    """The y label on the panels of the first column (on every panel a caller placed by hand,
    outside a subplot grid)."""
    for ax in axes:
        spec = ax.get_subplotspec()
        if spec is None or spec.is_first_col():
            ax.set_ylabel(ylabel)


def label_bottom_row(axes, xlabel: str) -> None:
    """The x label (and the x tick labels, which a shared x axis hides above the bottom row)
    on the lowest visible panel of each column only, so that a panel's title does not run into
    the x label of the panel above it; on every panel a caller placed by hand."""
    axes = [ax for ax in axes if ax.get_visible()]
    lowest: dict[int, int] = {}
    for ax in axes:
        spec = ax.get_subplotspec()
        if spec is not None:
            col, row = spec.colspan.start, spec.rowspan.stop
            lowest[col] = max(lowest.get(col, row), row)
    for ax in axes:
        spec = ax.get_subplotspec()
        if spec is None or spec.rowspan.stop == lowest[spec.colspan.start]:
            ax.set_xlabel(xlabel)
            ax.tick_params(axis="x", labelbottom=True)
        else:
            ax.set_xlabel("")


def means_and_seeds(ax, data, *, x: str, y: str, hue: str, order, hue_order=None,
                    palette=None, **point_kw) -> None:
    """Horizontal mean ± sd markers per category and hue, with every seed as a dot drawn on
    top (white-edged, so it stays visible on the mean and its error bar): the book's one look
    for a few seeds per setting."""
    import seaborn as sns

    common = dict(data=data, x=x, y=y, hue=hue, order=order, hue_order=hue_order,
                  palette=palette, dodge=0.4, ax=ax)
    sns.pointplot(**common, errorbar="sd", linestyle="none", capsize=0.1, markersize=8,
                  err_kws={"linewidth": 1.5}, **point_kw)
    sns.stripplot(**common, jitter=False, size=5.5, alpha=0.9, linewidth=0.7,
                  edgecolor="white", legend=False, zorder=4)


def legend_below(axes, handles=None, labels=None, *, ncol: int, beside=None,
                 title: str | None = None) -> None:
    """One legend for a figure of panels, never on the data: below the panels where the layout
    allows it (constrained layout, the book's own figures), else beside ``beside`` (by default
    the last panel; axes a caller placed). Without ``handles`` the first panel's legend entries
    are used; every panel's own legend is removed."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    axes = list(axes)
    if handles is None:
        handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig = axes[0].figure
    style = dict(title=title, fontsize=10, title_fontsize=10)
    if isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False,
                   **style)
    else:
        (beside or axes[-1]).legend(handles, labels, loc="upper left",
                                    bbox_to_anchor=(1.02, 1.0), **style)
