"""Category columns of a table (strings, pandas categories) as the one-hot inputs model "mlp" reads.

    finetune.train("mlp", (df, y))      # df's "sex" and "smoker" columns: one 0/1 input per level, read off df

A table's columns that hold words -- a DataFrame's object, string or category columns, or the columns of a 2-D
object array that hold strings (a CSV's, in the CLI) -- are categories. Their levels are read off the training
rows once (ModelEntry.choose_options) and kept as the model's option ``categories``, saved with its weights, so
that every split, and any later predict, is encoded alike:

- The number columns come first, in their order, then each category column's block of 0/1 columns: its levels in
  sorted order (a pandas category column: its categories' order, each declared one kept), then a level for a
  missing value (None, NaN, an empty word) where training held one. This is ``pd.get_dummies(df, dtype=float)``'s
  layout, so where every level is held by MIN_ROWS rows or more and no word is missing a model trained on the two
  is the same model (tests/test_categories.py).
- A level fewer than MIN_ROWS training rows hold, and beyond a column's MAX_LEVELS most common, is not a column of
  its own: such levels share one "other" column. A column of names or ids (a different value in almost every row)
  then costs one input, not one per row; a level that training never saw reads as "other" where there is one,
  else as no level at all (every column of its block 0), as scikit-learn's OneHotEncoder(handle_unknown="ignore").

The option, for each category column: ``{"column": its name (a DataFrame) or position (an array), "levels":
[...], "other": the share of training rows the "other" column held (0: the block has none)}``; levels are
strings, a missing value's None.
"""

from __future__ import annotations

import collections
import logging
import math
import numbers
from typing import Any

import numpy as np
import torch

from . import data, datasets

MIN_ROWS = 2  # a level held by fewer training rows shares the "other" column: one row teaches its weight nothing
# At most this many levels of a column get a column of their own (the most common): a bound on memory (1,000
# float32 inputs a row is 4 kB), not on what is learnt -- at 100, gapminder's 185 countries lost 0.49 points of
# R² (SE 0.10) to one column per country (benchmarks/categories.py)
MAX_LEVELS = 1000


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, pd.NA's comparisons (NA: not a bool, then missing too)
    except TypeError:
        return True


def _level(value: Any) -> str | None:
    """A cell as the level it stands for: its text; None where it is missing (an empty text too, as a CSV's empty
    cell is)."""
    if _is_missing(value):
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))  # 3, 3.0 and np.int64(3) are one level, as a CSV's "3" is
    return str(value)


def _cells(cells: Any) -> list[Any]:
    """A column's cells as Python values (a pandas Series' or a numpy column's)."""
    return cells.tolist() if hasattr(cells, "tolist") else list(cells)


def _number_text(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def table_columns(x: Any) -> list[tuple[Any, Any]] | None:
    """(name or position, the column's cells) for each column of a DataFrame or 2-D object array; None for what
    holds numbers only (a numeric array, a tensor), which goes on as it is."""
    if data.is_frame(x):
        return [(name, x.iloc[:, i]) for i, name in enumerate(x.columns)]
    if isinstance(x, np.ndarray) and x.dtype == object and x.ndim == 2:
        return [(i, x[:, i]) for i in range(x.shape[1])]
    return None


def _is_category(cells: Any) -> bool:
    """Whether a column is categories: a pandas category column, a string column, or objects among which is a
    string (numbers stored as text among them: _levels_of asks which they are)."""
    dtype = getattr(cells, "dtype", None)
    if type(dtype).__name__ == "CategoricalDtype":
        return True
    if dtype is not None and getattr(dtype, "kind", "O") in "biuf":
        return False
    return type(dtype).__name__ == "StringDtype" or any(isinstance(v, (str, bytes)) for v in _cells(cells))


def choose(x: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``categories`` read off the training inputs ``x`` (kept where given)."""
    if "categories" in options:
        check(options["categories"])
        return options
    columns = table_columns(x)
    if columns is None:
        return options
    chosen = [_levels_of(name, cells) for name, cells in columns if _is_category(cells)]
    names = [name for name, _ in columns]
    repeated = sorted({repr(name) for name in names if names.count(name) > 1})
    if chosen and repeated:
        raise TypeError(f"X has the column name(s) {', '.join(repeated)} more than once: its category columns are "
                        "found by name; give each column a name of its own")
    return {**options, "categories": chosen} if chosen else options


def _levels_of(name: Any, cells: Any) -> dict[str, Any]:
    values = _cells(cells)
    present = [v for v in values if not _is_missing(v)]
    declared = getattr(getattr(cells, "dtype", None), "categories", None)
    texts = bool(present) and all(isinstance(v, str) for v in present)
    if texts and declared is None and all(datasets.DATE_TEXT.fullmatch(v.strip()) for v in present):
        # each date its own level: a column of "other", or one input per day, where the time is a number
        raise TypeError(f"X column {name!r} holds dates as text (e.g. {present[0]!r}): turn them into numbers first "
                        f"-- days since the first, or the year and month as columns of their own (d = "
                        f"pd.to_datetime(df[{name!r}]); d.dt.year, d.dt.month) -- or, if they are a few labels, "
                        f"categories (df[{name!r}].astype('category'))")
    # A DataFrame's column of numbers as text is ambiguous (pandas read a messy column as strings): ask, also where
    # a few words are among them ('rotary' among cylinder counts), so that whether a split holds one does not
    # decide it. An object array's (a CSV's column of words whose words fell in other rows) is categories, as read.
    if texts and declared is None and data.is_series(cells):
        words = [v for v in present if not _number_text(v)]
        if len(words) <= NUMBER_TEXT_WORDS * len(present):
            among = (f" and {len(words)} value(s) that are not ({sorted(set(words))[:3]})" if words else "")
            coerce = ", errors='coerce'" if words else ""
            raise TypeError(f"X column {name!r} holds numbers as text (e.g. {present[0]!r}){among}: say which they "
                            f"are -- numbers (df[{name!r}] = pd.to_numeric(df[{name!r}]{coerce})"
                            + (": those become missing values" if words else "") + ") or categories "
                            f"(df[{name!r}] = df[{name!r}].astype('category'))")
    counts = collections.Counter(_level(v) for v in values)
    if declared is not None:  # a pandas category column: its categories' order, each declared one kept
        order = [_level(c) for c in declared]
    else:
        order = sorted(level for level in counts if level is not None)
    common = set(sorted((level for level in order if counts[level] >= MIN_ROWS or declared is not None),
                        key=lambda level: -counts[level])[:MAX_LEVELS])
    kept = [level for level in order if level in common]
    if None in counts:
        kept.append(None)
    other = sum(n for level, n in counts.items() if level not in kept) / len(values)
    if not [level for level in kept if level is not None] and len(present) >= 2 * MIN_ROWS:
        logging.getLogger("finetune").warning(
            f"X column {data.shown_column(column_key(name))}: no value of it is held by {MIN_ROWS} or more training "
            f"rows ({len(counts)} distinct in {len(values)} rows: an id, a name, a time?), so the column reads as one "
            "'other' input and tells the model nothing: drop it, or turn it into numbers")
    return {"column": column_key(name), "levels": kept, "other": other}


def column_key(name: Any) -> str | int:
    """A column's name as the option keeps it (JSON): a string or an integer as it is, anything else its text."""
    if isinstance(name, numbers.Integral) and not isinstance(name, bool):
        return int(name)
    return name if isinstance(name, str) else str(name)


def check(value: Any) -> None:
    """A TypeError unless ``value`` is a categories option as :func:`choose` writes it."""
    fine = isinstance(value, (list, tuple)) and all(
        isinstance(c, dict) and set(c) == {"column", "levels", "other"} and isinstance(c["column"], (str, int))
        and isinstance(c["levels"], (list, tuple)) and all(v is None or isinstance(v, str) for v in c["levels"])
        and isinstance(c["other"], (int, float)) and not isinstance(c["other"], bool) and 0 <= c["other"] <= 1
        for c in value)
    if not fine:
        raise TypeError(f"model option categories={value!r} has the wrong type: a list of {{'column': name or "
                        "position, 'levels': [strings, None for a missing value], 'other': a share in [0, 1]}, one "
                        "per category column (finetune.train reads it off the data)")


def encode(x: Any, options: dict[str, Any], rows: np.ndarray | None = None) -> Any:
    """``x`` with its category columns one-hot (the layout of the module's docstring): a float32 array, NaN where
    a number column's value is missing. Numbers with no categories go on as they are. (``rows``: the encode hook's
    training sample, which one-hot encoding does not report on.)"""
    categories = options.get("categories", [])
    check(categories)
    columns = table_columns(x)
    if not categories:
        if columns is not None:
            found = next((name for name, cells in columns if _is_category(cells)), None)
            if found is not None:
                raise ValueError(f"X column {found!r} holds categories (e.g. {_example(x, found)!r}), and the model "
                                 "was built with none (categories=[]): train it on this table, or encode the column "
                                 "as numbers first")
            if data.is_frame(x) and any(getattr(c.dtype, "kind", "O") == "O" for _, c in columns):
                # objects that are numbers (None: missing), read as a table with words reads its number columns
                return torch.from_numpy(_number_columns(columns, len(x)))
        return x
    if columns is None:
        if _encoded(x, options.get("in_features")):
            return x  # numbers the model reads already: the recipe's phases, a later train on encoded rows
        shape = tuple(np.shape(x)) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"model 'mlp' reads category columns {[c['column'] for c in categories]}: pass X as the "
                         f"table it trained on (a DataFrame, or an object array holding their words), got {shape}")
    if len(x) == 0:
        raise ValueError("X is empty (0 examples)")
    named = [c["column"] for c in categories]
    positional = all(isinstance(c, int) for c in named) and not any(isinstance(column_key(n), int)
                                                                    for n, _ in columns)
    if data.is_frame(x) and positional:
        # A model trained on rows without names (a CLI run's CSV, an object array) given a DataFrame: its columns
        # by position, as its number columns are read (a CLI run has checked their names against the CSV's).
        columns = [(i, cells) for i, (_, cells) in enumerate(columns)]
    by_name = {column_key(name): cells for name, cells in columns}  # a DataFrame's by name, an array's by position
    absent = [name for name in named if name not in by_name]
    if absent:
        raise ValueError(f"X lacks the category column(s) {absent} the model was trained on (it has "
                         f"{list(by_name)[:20]})")
    encoded = set(named)
    number_block = _number_columns([(name, cells) for name, cells in columns if column_key(name) not in encoded],
                                   len(x))
    blocks = [number_block] + [_one_hot(by_name[c["column"]], c) for c in categories]
    return torch.from_numpy(np.concatenate(blocks, axis=1))  # a tensor: what _encoded passes on as encoded


def _encoded(x: Any, width: Any) -> bool:
    """Whether ``x`` is the inputs already encoded: a tensor (or a list of one), as encode returns them (a run
    encodes its splits once; the recipe's phases pass tensors), as wide as the model's inputs where they are known.
    A numpy array of numbers is not: a table encoded by hand may hold its columns in another order."""
    if isinstance(x, (list, tuple)) and len(x) == 1:
        x = x[0]
    return isinstance(x, torch.Tensor) and x.dim() == 2 and (not width or x.shape[1] == width)


def _example(x: Any, name: Any) -> Any:
    """A word of column ``name`` (what made it categories), else its first value present."""
    cells = dict(table_columns(x))[name]
    values = [v for v in _cells(cells) if not _is_missing(v)]
    return next((v for v in values if isinstance(v, (str, bytes))), values[0] if values else None)


def _number_columns(columns: list[tuple[Any, Any]], rows: int) -> np.ndarray:
    """The columns the model reads as numbers, as float32: a missing value (None, NaN, pd.NA) NaN, which "mlp"
    fills; a word among them an error naming the column."""
    values = np.empty((rows, len(columns)), dtype=np.float32)
    for j, (name, cells) in enumerate(columns):
        dtype = getattr(cells, "dtype", None)
        if dtype is not None and getattr(dtype, "kind", "O") in "biuf":  # pandas' nullable ones too (NA: NaN)
            values[:, j] = (cells.to_numpy(dtype=np.float32, na_value=np.nan) if data.is_series(cells)
                            else np.asarray(cells, dtype=np.float32))
            continue
        for i, v in enumerate(_cells(cells)):
            if _is_missing(v):
                values[i, j] = math.nan
            elif isinstance(v, numbers.Real) and not isinstance(v, (np.datetime64, np.timedelta64)):
                values[i, j] = float(v)
            else:
                raise TypeError(data.not_a_number(column_key(name), v, i))
    return values


# A DataFrame's column of texts is asked about (numbers or categories?) where at most this share of them are not
# numbers: Cars93's cylinder counts hold one "rotary" in 93 rows, which a split may or may not draw
NUMBER_TEXT_WORDS = 0.1

UNSEEN_WARNING = 0.5  # a warning where more than this share of a column's rows hold no level of it, and more
# than twice the share its "other" column held in training (a column of names is mostly "other" from the start)


def _one_hot(cells: Any, category: dict[str, Any]) -> np.ndarray:
    levels = category["levels"]
    flags = [v for v in _cells(cells) if isinstance(v, (bool, np.bool_))]
    if flags and not {"0", "1"} & set(levels):  # True would read as level "1", which words never are: nothing
        raise TypeError(f"X column {category['column']!r} holds booleans (e.g. {bool(flags[0])!r}), and the model "
                        f"was trained with it as words {levels[:5]}{' ...' if len(levels) > 5 else ''}: pass its "
                        f"words (e.g. df[{category['column']!r}].map({{True: ..., False: ...}}))")
    index = {level: i for i, level in enumerate(levels)}
    unknown = len(levels) if category["other"] > 0 else -1  # "other", or no column at all
    values = [_level(v) for v in _cells(cells)]
    ids = np.fromiter((index.get(v, unknown) for v in values), dtype=np.int64, count=len(values))
    unseen = [v for v in values if v not in index]
    share = len(unseen) / max(len(values), 1)
    # "MALE" for "male", 1 for "1st": read as nothing. Where training had no rare values (no "other" input), even
    # one row's new value has nothing to read as -- a user predicting one row learns of it only here.
    if (share > UNSEEN_WARNING and share > 2 * category["other"]) or (unseen and category["other"] == 0):
        examples = ", ".join(repr(v) for v in list(dict.fromkeys(unseen))[:3])
        logging.getLogger("finetune").warning(
            f"X column {data.shown_column(category['column'])}: {len(unseen)} of {len(values)} rows hold a value "
            f"training did not have as a level (e.g. {examples}; its levels: {levels[:5]}"
            f"{' ...' if len(levels) > 5 else ''}): "
            + ("they read as its 'other' input, as its rare values did" if category["other"] > 0 else
               "they read as none of its levels (all of its inputs 0)"))
    block = np.zeros((len(values), len(levels) + int(category["other"] > 0)), dtype=np.float32)
    hit = ids >= 0
    block[np.nonzero(hit)[0], ids[hit]] = 1.0
    return block
