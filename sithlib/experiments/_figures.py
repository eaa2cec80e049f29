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
