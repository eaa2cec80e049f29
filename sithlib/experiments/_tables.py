"""Table cells the experiments share: a mean over seeds with its standard deviation.

Every chapter table prints ``mean±sd`` with no spaces around ±, so that the book's narrow
content column never breaks a cell inside a number (it wraps between cells instead).
"""

from __future__ import annotations

import pandas as pd


def mean_sd(mean: float, sd: float | None = None, fmt: str = "{:.3f}",
            sd_fmt: str | None = None) -> str:
    """``mean±sd``, or the mean alone when ``sd`` is None or NaN (one seed)."""
    text = fmt.format(mean)
    if sd is None or pd.isna(sd):
        return text
    return text + "±" + (sd_fmt or fmt).format(sd)


def of_values(values: pd.Series, fmt: str = "{:.3f}") -> str:
    """:func:`mean_sd` of per-seed values (sample standard deviation; none for one value)."""
    return mean_sd(values.mean(), values.std(), fmt)


def of_agg(agg: pd.DataFrame, fmt: str = "{:.3f}") -> pd.Series:
    """:func:`mean_sd` of every row of a ``groupby(...).agg(["mean", "std", ...])`` frame."""
    return pd.Series([mean_sd(m, s, fmt) for m, s in zip(agg["mean"], agg["std"], strict=True)],
                     index=agg.index, dtype=object)
