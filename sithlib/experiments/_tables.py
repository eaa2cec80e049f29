"""Table cells and prose pieces the experiments and chapters share: a mean over seeds with its
standard deviation, display names, and the small helpers of computed sentences.

Every chapter table prints ``mean±sd`` with no spaces around ±, so that the book's narrow
content column never breaks a cell inside a number (it wraps between cells instead).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from sithlib.methods import METHODS, method_label


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


def of_agg(agg: pd.DataFrame, fmt: str = "{:.3f}", fmts: dict | None = None) -> pd.Series:
    """:func:`mean_sd` of every row of a ``groupby(...).agg(["mean", "std", ...])`` frame;
    ``fmts`` overrides ``fmt`` for the rows whose last index level (the metric) it names."""
    fmts = fmts or {}
    keys = agg.index.get_level_values(-1)
    return pd.Series([mean_sd(m, s, fmts.get(k, fmt))
                      for k, m, s in zip(keys, agg["mean"], agg["std"], strict=True)],
                     index=agg.index, dtype=object)


class _MethodLabels(Mapping):
    """Method name -> display name, read from :data:`sithlib.methods.METHODS` at each lookup,
    so a method registered after import (:func:`sithlib.methods.register_method`) has its
    ``label`` here too. One source: each method class's ``label``."""

    def __getitem__(self, name: str) -> str:
        if name not in METHODS:
            raise KeyError(name)
        return method_label(name)

    def __iter__(self):
        return iter(list(METHODS))

    def __len__(self) -> int:
        return len(METHODS)

    def __repr__(self) -> str:
        return f"METHOD_LABELS({dict(self)!r})"


#: Display names of the methods (the keys of :data:`sithlib.methods.METHODS`) in tables.
METHOD_LABELS = _MethodLabels()

#: Display names of the scores that several chapters' tables share: the names under which
#: chapter 1.1 (identifiability) defines them.
METRIC_LABELS = {
    "r2_linear": "linear R²", "r2_nonlinear": "nonlinear R²", "procrustes_r2": "Procrustes R²",
    "mcc": "MCC", "mcc_spearman": "MCC (Spearman)", "orthogonality": "orthogonality",
    "effective_rank": "effective rank", "knn_to_z": "mutual kNN with z", "mutual_knn": "mutual kNN",
    "cka_linear": "linear CKA", "knn_acc": "kNN accuracy", "knn": "kNN accuracy",
}


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the display names of its methods (index) and scores (columns), and no
    name on the column axis (the labels say what they are); the index keeps its name."""
    out = table.rename(index=METHOD_LABELS, columns=METRIC_LABELS)
    out.columns.name = None
    return out


def and_join(items) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``: a list in a sentence."""
    items = [str(i) for i in items]
    if not items:
        raise ValueError("and_join needs at least one item, got none")
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def number(x: float, digits: int = 3) -> str:
    """A number for the prose with ``digits`` decimals and a true minus sign (U+2212)."""
    return f"{float(x):.{digits}f}".replace("-", "\u2212")


_NUMBER_WORDS = ("none", "one", "two", "three", "four", "five", "six", "seven", "eight",
                 "nine", "ten")


def tex_sci(x: float, digits: int = 2) -> str:
    """``x`` in scientific notation as TeX (without ``$``), to ``digits`` significant digits:
    ``8.3e-05`` gives ``8.3 \\times 10^{-5}``, ``1e-04`` gives ``1 \\times 10^{-4}``."""
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    return f"{mantissa.removesuffix('.0')} \\times 10^{{{int(exponent)}}}"


def number_word(n: int) -> str:
    """``n`` for a sentence: ``"none"``, ``"one"``, ... ``"ten"``, then digits (``"12"``)."""
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else f"{n:,}"


def count_of(k: int, n: int, noun: str, verbs: tuple[str, str]) -> str:
    """``k`` of ``n`` things doing something, in words: ``"none of the 12 intact runs
    collapses"``, ``"neither run ends"``, ``"both runs end"``, ``"three of the ten ablations
    collapse"``. ``verbs`` is the verb for one and for several (``("ends", "end")``)."""
    one, many = verbs
    if n == 1:
        return f"the {noun} {one}" if k else f"the {noun} does not {many}"
    if k == 0:
        return f"neither {noun} {one}" if n == 2 else f"none of the {number_word(n)} {noun}s {one}"
    if k == n:
        return f"both {noun}s {many}" if n == 2 else f"all {number_word(n)} {noun}s {many}"
    return f"{number_word(k)} of the {number_word(n)} {noun}s {one if k == 1 else many}"
