"""Turning what users pass (numpy arrays, tensors, tuples or dicts of them) into the tensors the C++ loop reads."""

from __future__ import annotations

import collections.abc
import contextlib
import contextvars
import datetime
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import torch

ArrayLike = Any  # numpy array, torch tensor, or a nested sequence numpy accepts


def as_tensor(value: ArrayLike, name: str) -> torch.Tensor:
    """A CPU tensor sharing the memory of ``value`` where the dtype allows it."""
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:
            raise TypeError(f"{name} is a sparse torch tensor ({value.layout}); pass a dense one: {name}.to_dense()")
        return value.detach()
    if hasattr(value, "toarray") and hasattr(value, "nnz"):  # scipy.sparse, without importing scipy
        raise TypeError(f"{name} is a scipy.sparse matrix ({type(value).__name__}, shape {value.shape}); pass a dense "
                        f"array: {name}.toarray()")
    if isinstance(value, str) and name.startswith("y"):  # (X, "label"): a column's name where its values go
        raise TypeError(f"{name} is the string {value!r}: pass the labels themselves (a DataFrame's column: "
                        f"df[{value!r}], with X = df.drop(columns={value!r})), not a column's name")
    if isinstance(value, (str, bytes, dict)) or value is None:
        raise TypeError(f"{name} must be an array (numpy, a torch tensor, a pandas DataFrame or Series, a list), got "
                        f"{type(value).__name__}")
    if is_frame(value):
        value = _frame_numbers(value, name)
    elif _is_categorical(value):
        value = _category_numbers(value, name)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged nested lists
        raise ValueError(f"{name} could not be converted to an array: {error}") from None
    if array.ndim == 0:
        raise ValueError(f"{name} must have a first (example) dimension, got a scalar")
    if array.dtype == object or array.dtype.kind in "USV":
        first = next((v for v in array.reshape(-1) if isinstance(v, (str, bytes))), None) if array.size else None
        hint = (f" (e.g. {first!r}): encode them as numbers first -- class ids for labels (pd.factorize), one-hot "
                f"columns for features (pd.get_dummies)" if first is not None else "")
        raise TypeError(f"{name} must hold numbers, got an array of dtype {array.dtype}{hint}")
    if array.dtype.kind == "u" and array.dtype != np.uint8:
        array = array.astype(np.int64)
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # a read-only array (a memory-mapped y): shared as it is; nothing writes to it
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(array)
    return torch.from_numpy(array)


def row_name(row: int, index: Any = None) -> str:
    """"row 4" (its position from 0), with its label where a pandas index is not the positions (after a
    train_test_split: "row 4 (index 268)")."""
    import pandas as pd

    if index is None or (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1):
        return f"row {row}"
    label = index[row]
    return f"row {row} (index {label.item() if isinstance(label, np.generic) else label!r})"


def class_labels(value: Any, name: str) -> np.ndarray | None:
    """``value``'s class labels as a 1-D array of str where they are strings ("Yes"/"No", "setosa"; a list, a
    numpy array, a pandas Series, categorical or one-column DataFrame of them); None where it holds numbers (class
    ids, values), a tensor or a dataset, which go on as they are. A missing label among strings is an error."""
    if isinstance(value, (torch.Tensor, str, bytes, dict)) or value is None:
        return None
    if is_frame(value):
        if value.shape[1] != 1:
            return None
        value = value.iloc[:, 0]
    index = value.index if is_series(value) else None
    if is_series(value) or _is_categorical(value):
        value = np.asarray(value.astype(object))
    elif not isinstance(value, (np.ndarray, list, tuple)):
        return None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        return None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or array.dtype.kind not in "USO":
        return None
    if array.dtype.kind == "S":
        raise TypeError(f"{name} holds bytes such as {bytes(array[0])!r}: decode them to str labels ({name}.astype(str))")
    if array.dtype.kind == "O":
        strings = np.fromiter((isinstance(v, str) for v in array), bool, len(array))
        if not strings.any():
            return None  # numbers in an object array: as_tensor converts or names them
        if not strings.all():
            row = int(np.flatnonzero(~strings)[0])
            value = array[row]
            missing = value is None or (isinstance(value, float) and value != value)  # None, or pandas' NaN for it
            said = f"missing ({value!r})" if missing else repr(value)
            raise ValueError(f"{name} {row_name(row, index)} is {said} among labels such as "
                             f"{str(array[strings][0])!r}: every label must be a string (drop the rows without one, or "
                             "fill them)")
    return array.astype(str)


BOOL_CLASSES = (False, True)  # a y of booleans: its classes, in id order, whatever the sample holds


def _bool_labels(value: Any, name: str) -> np.ndarray | None:
    """``value`` as a 1-D numpy bool array where it holds booleans (numpy, a list, a pandas Series or one-column
    DataFrame, pandas' nullable "boolean" without a missing one); None otherwise (a tensor goes on as ids)."""
    if is_frame(value):
        if value.shape[1] != 1:
            return None
        value = value.iloc[:, 0]
    if is_series(value):
        if value.dtype.kind != "b" and str(value.dtype) != "boolean":
            return None
        if bool(value.isna().any()):
            row = int(np.flatnonzero(value.isna().to_numpy())[0])
            raise ValueError(f"{name} {row_name(row, value.index)} is missing among booleans: drop the rows without "
                             "a label, or fill them")
        return value.to_numpy(dtype=bool)
    if not isinstance(value, (np.ndarray, list)):
        return None
    array = np.asarray(value) if isinstance(value, np.ndarray) or all(
        isinstance(v, (bool, np.bool_)) for v in value) else None
    if array is None or array.dtype != bool or array.size == 0:
        return None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    return array if array.ndim == 1 else None


def label_ids(value: Any, name: str, task: str, classes: tuple[str, ...] | None,
              fit: bool) -> tuple[Any, tuple[str, ...] | None]:
    """``value`` with string labels as class ids, and the labels in id order. ``fit``: the classes are
    ``value``'s own, sorted (as scikit-learn's LabelEncoder); else ``classes``, the training labels (None: the
    training y held class ids), and a label outside them is an error. Numbers are returned as they are."""
    flags = _bool_labels(value, name)
    if flags is not None and task == "classification":  # True/False: ids 1/0, given back as booleans
        if not fit and classes is not None and tuple(classes) != BOOL_CLASSES:
            raise ValueError(f"{name} holds booleans, and the model's classes are labels "
                             f"{_some(list(classes), 8)}: pass {name} as labels")
        return flags.astype(np.int64), BOOL_CLASSES
    labels = class_labels(value, name)
    if labels is None:
        if classes is not None and tuple(classes) == BOOL_CLASSES:
            return value, None  # class ids 0/1 for a model trained on booleans: False is 0, as numpy reads it
        if classes is not None and value is not None and not fit:
            raise ValueError(f"{name} holds class ids, and the model's classes are labels "
                             f"{_some(list(classes), 8)}: pass {name} as labels")
        return value, None
    if task != "classification":
        raise TypeError(f"{name} holds labels such as {str(labels[0])!r}, and task={task!r} needs numbers")
    if fit:
        classes = tuple(np.unique(labels).tolist())
    elif classes is None:
        raise ValueError(f"{name} holds labels such as {str(labels[0])!r}, and the model was trained on class ids (no "
                         "labels on record): pass class ids")
    known = np.asarray(classes)
    ids = np.searchsorted(known, labels).clip(0, len(known) - 1)
    unknown = known[ids] != labels
    if unknown.any():
        raise ValueError(f"{name} holds label(s) {_some(sorted(set(labels[unknown].tolist())), 8)} that the training "
                         f"y does not (its classes: {_some(list(classes), 20)})")
    return ids.astype(np.int64), classes


def is_frame(value: Any) -> bool:
    """A pandas DataFrame (told by its module, so that pandas is imported only when it is used)."""
    return type(value).__module__.split(".")[0] == "pandas" and hasattr(value, "columns")


def is_series(value: Any) -> bool:
    """A pandas Series (one column, or one row of a DataFrame: df.iloc[i])."""
    return type(value).__module__.split(".")[0] == "pandas" and type(value).__name__ == "Series"


def _is_categorical(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "pandas" and type(getattr(value, "dtype", None)).__name__ == \
        "CategoricalDtype"


def _category_numbers(value: Any, name: str) -> Any:
    """A pandas categorical (a Series or Categorical) as its values when its categories are numbers; categories of
    strings are an error naming the dtype, with the codes as the way out."""
    import pandas as pd

    categories = value.dtype.categories
    if pd.api.types.is_numeric_dtype(categories.dtype):  # NaN, or nullable categories (Int64): as float64
        plain = isinstance(categories.dtype, np.dtype) and not bool(value.isna().any())
        return np.asarray(value.astype(categories.dtype if plain else np.float64))
    example = f" (e.g. {categories[0]!r})" if len(categories) else ""
    codes = f"{name}.cat.codes" if is_series(value) else f"{name}.codes"
    raise TypeError(f"{name} holds pandas categories of {categories.dtype} values{example}, not numbers: pass "
                    f"{codes} (class ids in the categories' order) or numbers of your own")


def check_rows_aligned(x: Any, y: Any, names: tuple[str, str] = ("X", "y")) -> None:
    """X and y as pandas objects pair their rows by position, as everywhere here (and in scikit-learn); when both
    carry an index and the two differ, a row is paired with another row's label (y shuffled, or filtered apart
    from X) and trains in silence: say so."""
    if not ((is_frame(x) or is_series(x)) and (is_frame(y) or is_series(y))) or len(x) != len(y):
        return
    if x.index.equals(y.index):
        return
    position = next((i for i in range(len(x)) if not x.index[i:i + 1].equals(y.index[i:i + 1])), None)
    if position is None:  # equal row by row (values pandas compares apart as whole indexes): nothing to say
        return
    first, second = x.index[position:position + 1].tolist()[0], y.index[position:position + 1].tolist()[0]
    said = (f"{names[0]} and {names[1]} have different pandas indexes (row {position}: {names[0]}'s {first!r}, "
            f"{names[1]}'s {second!r}) and rows pair by position")
    try:  # the same labels in another order: a row beside another row's label, surely
        shuffled = x.index.sort_values().equals(y.index.sort_values())
    except TypeError:  # labels pandas cannot order
        shuffled = False
    if shuffled:
        raise ValueError(f"{said}: they hold the same labels in another order; align them ({names[1]} = "
                         f"{names[1]}.loc[{names[0]}.index]), or pass {names[1]}.to_numpy() if the positions match")
    # Other labels (one side's index reset after a transform, say): likely paired by position as meant; said once.
    import logging

    logging.getLogger("finetune").warning(f"{said}; if the rows match by label, align them first "
                                          f"({names[1]} = {names[1]}.loc[{names[0]}.index])")


def column_names(value: Any) -> tuple[str, ...] | None:
    """A pandas DataFrame's column names as strings (what a model trained on it remembers), else None."""
    return tuple(str(c) for c in value.columns) if is_frame(value) else None


def check_columns(value: Any, trained: Sequence[str] | None, name: str = "X") -> None:
    """A DataFrame's columns against the ones the model was trained on: one missing, added or moved would feed
    each input another feature's values (wrong predictions and no error). Arrays carry no names: not checked."""
    check_column_names(column_names(value), trained, name)


def example_shape(value: Any) -> tuple[int, ...] | None:
    """The shape of one example of X given as one array of numbers (a NumPy array, a tensor, a DataFrame), what
    predict checks a later X against; None for texts, several inputs or a stream."""
    if is_frame(value):
        return (len(value.columns),)
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim >= 1 and value.dtype != object:
        return tuple(int(n) for n in value.shape[1:])
    return None


def check_example_shape(value: Any, trained: Sequence[int] | None, name: str = "X") -> None:
    """X against the shape of the examples the model was trained on: a single example passed as X (its features
    read as as many examples of one number each) or another number of dimensions is one error naming both shapes.
    The sizes are checked for 2-D floating features only: a model may take token ids or images of other lengths."""
    if is_series(value) and trained is not None and (len(value),) == tuple(trained):
        raise ValueError(f"{name} is a pandas Series of {len(value)} values, the shape of one training example; "
                         f"{name} holds a batch of them: a one-row DataFrame (df.iloc[[i]], not df.iloc[i]) for one "
                         "example")
    shape = example_shape(value)
    if shape is None or trained is None:
        return
    trained = tuple(trained)
    full = tuple(value.shape)
    if full == trained:
        raise ValueError(f"{name} has the shape of one training example, {full}; {name} holds a batch of them: "
                         f"{name}.reshape(1, {', '.join(map(str, trained))}) for one example")
    floating = (is_frame(value) or (value.is_floating_point() if isinstance(value, torch.Tensor)
                                    else np.issubdtype(value.dtype, np.floating)))
    if len(shape) != len(trained) or (len(trained) == 1 and floating and shape != trained):
        raise ValueError(f"{name}'s examples are shaped {shape} ({name} of shape {full}), and the model was trained "
                         f"on examples shaped {trained}")


def check_column_names(columns: Sequence[str] | None, trained: Sequence[str] | None, name: str = "X",
                       reorder: str | None = None) -> None:
    """``columns`` (a DataFrame's, a CSV file's header) against the training ones; see check_columns. ``reorder``:
    how to put them in order, when only the order differs (a DataFrame's: pass X[columns])."""
    if columns is None or trained is None or tuple(columns) == tuple(trained):
        return
    columns, trained = tuple(columns), tuple(trained)
    missing = [c for c in trained if c not in columns]
    added = [c for c in columns if c not in trained]
    if missing or added:
        said = ([f"missing {_some(missing)}"] if missing else []) + ([f"not in training {_some(added)}"] if added else [])
        raise ValueError(f"{name}'s columns differ from the ones the model was trained on: {'; '.join(said)}")
    moved = next(i for i, (a, b) in enumerate(zip(columns, trained)) if a != b)
    raise ValueError(f"{name}'s columns are in another order than in training ({columns[moved]!r} at position "
                     f"{moved}, where training had {trained[moved]!r}): {reorder or f'pass {name}[columns]'} in the "
                     f"training order {_some(list(trained))}")


def _some(names: list[str], most: int = 6) -> str:
    return repr(names) if len(names) <= most else repr(names[:most])[:-1] + f", ... ({len(names)} in all)]"


# The names of X's columns where X is an array, which has none: a CSV's feature columns that the CLI read into an
# object array. A message naming such a column by its position ("X column 1") names it by these instead.
_COLUMN_NAMES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("column_names", default=None)


@contextlib.contextmanager
def named_columns(names: Sequence[str] | None) -> Iterator[None]:
    """Within it, messages name X's columns by ``names`` (a CSV's header but its label), not by their positions."""
    token = _COLUMN_NAMES.set(tuple(names) if names is not None else None)
    try:
        yield
    finally:
        _COLUMN_NAMES.reset(token)


def shown_column(name: Any) -> str:
    """How a message names X's column ``name``: its name, or an array's column by its position -- or by the name
    :func:`named_columns` gave that position."""
    names = _COLUMN_NAMES.get()
    if names is not None and isinstance(name, int) and not isinstance(name, bool) and 0 <= name < len(names):
        return repr(names[name])
    return repr(name)


def not_a_number(name: Any, value: Any, row: int) -> str:
    """Why a cell of a column read as numbers is refused, with what to do: a date or a duration has no one number
    the model could read it as (pd.to_numeric gives nanoseconds since 1970)."""
    if isinstance(value, (datetime.date, np.datetime64)):
        return (f"X column {name!r} holds dates (e.g. {value!r}, row {row}): turn them into numbers first -- days "
                f"since the first, (df[{name!r}] - df[{name!r}].min()).dt.days, or df[{name!r}].dt.year and "
                ".dt.month as columns of their own")
    if isinstance(value, (datetime.timedelta, np.timedelta64)):
        return (f"X column {name!r} holds durations (e.g. {value!r}, row {row}): turn them into numbers first, "
                f"e.g. df[{name!r}].dt.total_seconds() / 3600 (hours)")
    return (f"X column {shown_column(name)} holds {value!r} (row {row}), and the model reads it as numbers (as the "
            "column held in training: numbers, or booleans read as 0 / 1): pass those, a missing one as NaN or None")


def _frame_numbers(frame: Any, name: str) -> Any:
    """A pandas DataFrame's values: a column that is not numbers (strings, categories of strings, dates) named in
    the error; mixed number and boolean columns (pd.get_dummies beside floats), categories of numbers, or pandas'
    nullable columns, as float64 (NA: NaN)."""
    import pandas as pd

    kinds = []
    for position, dtype in enumerate(frame.dtypes):
        kind = getattr(dtype, "kind", "O")
        if isinstance(dtype, pd.CategoricalDtype) and pd.api.types.is_numeric_dtype(dtype.categories.dtype):
            kind = "f"  # categories that are numbers: their values
        if kind not in "biuf":
            column = frame.iloc[:, position]
            present = column.dropna()
            if kind in "Mm" and len(present):  # dates, durations: no number to read them as without a choice
                raise TypeError(not_a_number(frame.columns[position], present.iloc[0],
                                             int(np.flatnonzero(column.notna().to_numpy())[0])))
            example = f" (e.g. {present.iloc[0]!r})" if len(present) else ""
            numbers = pd.to_numeric(present, errors="coerce").notna().all() if len(present) else False
            label = frame.columns[position]
            fix = (f"they read as numbers: df[{label!r}] = pd.to_numeric(df[{label!r}])" if numbers else
                   "encode it first (pd.get_dummies(...) for categories, .cat.codes, or numbers of your own; "
                   "model 'mlp' one-hot encodes them itself)")
            raise TypeError(f"{name} column {label!r} holds {dtype} values{example}, not a numeric dtype: {fix}")
        kinds.append(kind)
    numpy_dtypes = all(isinstance(dtype, np.dtype) for dtype in frame.dtypes)
    if numpy_dtypes and set(kinds) <= set("iu"):  # integers stay integers (ids), promoted as numpy promotes them
        return frame.to_numpy(dtype=np.result_type(*frame.dtypes))
    if numpy_dtypes and len(set(frame.dtypes)) == 1:
        return frame.to_numpy()
    return frame.to_numpy(dtype=np.float64, na_value=np.nan)


def keywords(value: Any, name: str = "X") -> list[str] | None:
    """The keys of ``value`` when it is a dict of model inputs (passed to the model as keywords), else None."""
    if not isinstance(value, collections.abc.Mapping):
        return None
    keys = list(value.keys())
    if not keys:
        raise ValueError(f"{name} is an empty dict: pass the model's inputs by name ({{'input_ids': ..., ...}})")
    bad = [k for k in keys if not isinstance(k, str) or not k.isidentifier()]
    if bad:
        raise TypeError(f"{name}'s keys are passed to the model as keyword arguments and must be names, got {bad[0]!r}")
    return keys


def features(value: ArrayLike | Sequence[ArrayLike], name: str, dtype: torch.dtype,
             examples: int | None = None, missing: bool = False) -> list[torch.Tensor]:
    """One or more input tensors. Floating and boolean inputs are cast to ``dtype`` (the model's) and must be
    finite -- but for NaN, a missing value, where ``missing`` (the model fills them: registry.takes_missing);
    integer inputs are kept as they are (embedding ids). ``examples``, when known (the labels'
    length), tells a list of model inputs from a list of rows. A dict (a tokenizer's ``BatchEncoding``, or
    ``{"input_ids": ..., "attention_mask": ...}``) gives its values in its keys' order (see :func:`keywords`)."""
    keys = keywords(value, name)
    if keys is not None:
        items, labels = [value[k] for k in keys], [f"{name}[{k!r}]" for k in keys]
    else:
        items = list(value) if isinstance(value, (list, tuple)) and value and _is_array(value[0]) else [value]
        labels = [name] if len(items) == 1 else [f"{name}[{i}]" for i in range(len(items))]
    if keys is None and len(items) > 1 and examples is not None and len(items) == examples and \
            any(_first_dimension(item) != examples for item in items):
        raise TypeError(f"{name} is a list of {len(items)} arrays, one per example: pass one array "
                        f"({name} = np.stack(rows)), or a list of model inputs each with one row per example")
    tensors = []
    for i, item in enumerate(items):
        label = labels[i]
        tensor = as_tensor(item, label)
        if tensor.dim() == 0:
            raise ValueError(f"{label} must have a first (example) dimension, got a scalar")
        if tensor.shape[0] == 0:
            raise ValueError(f"{label} is empty (0 examples)")
        if tensor.is_floating_point() or tensor.dtype in (torch.uint8, torch.bool):
            tensor = tensor.to(dtype)
            bad = torch.isinf(tensor) if missing else ~torch.isfinite(tensor)
            if bool(bad.any()):
                row, col, found = _first_non_finite(tensor, bad)
                column, where = col, f"row {row}"
                if is_frame(item):  # a DataFrame's column by name, and its row's index label unless that is 0..n-1
                    column = repr(item.columns[col])
                    index = item.index
                    if not (type(index).__name__ == "RangeIndex" and index.start == 0 and index.step == 1):
                        where += f" (index label {index[row:row + 1].tolist()[0]!r})"
                remedy = ("; fill them or drop those rows (model 'mlp' fills missing values itself)"
                          if found == "NaN" else "")
                raise ValueError(f"{label} contains {found} (the first non-finite value: {where}, column {column})"
                                 f"{remedy}")
        tensors.append(tensor)
    rows = {t.shape[0] for t in tensors}
    if len(rows) > 1:
        raise ValueError(f"the inputs of {name} have different numbers of rows: {[t.shape[0] for t in tensors]}")
    return tensors


def targets(value: ArrayLike, name: str, task: str, rows: int) -> torch.Tensor:
    """Class ids (int64, >= 0) for classification, float32 values for regression; for ranking y is None (the
    interactions are the data) and the targets are zeros, one per interaction, which nothing reads."""
    if task == "ranking":
        if value is not None:
            raise ValueError(f"{name} must be None for task='ranking' (it learns from the (user, item) interactions "
                             f"alone, each against items drawn at random), got {type(value).__name__}")
        return torch.zeros(rows, dtype=torch.float32)
    if task == "classification" and is_frame(value) and value.shape[1] == 1:
        value = value.iloc[:, 0]  # y as a one-column DataFrame (df[["label"]]): its column
    tensor = as_tensor(value, name)
    if tensor.dim() == 0 or tensor.shape[0] != rows:
        got = "a scalar" if tensor.dim() == 0 else f"{tensor.shape[0]} rows"
        raise ValueError(f"{name} has {got} but the features have {rows} rows")
    if task == "classification":
        if tensor.dim() == 2 and tensor.shape[1] == 1:  # a column of class ids, as scikit-learn takes it
            tensor = tensor[:, 0]
        if tensor.dim() != 1:
            raise ValueError(f"{name} must be a 1-D array of class ids, got shape {tuple(tensor.shape)}")
        if tensor.is_floating_point():
            if not bool(torch.isfinite(tensor).all()) or not bool((tensor == tensor.round()).all()):
                raise ValueError(f"{name} must be integer class ids for task='classification', got non-integer "
                                 f"values such as {tensor[(tensor != tensor.round()) | ~torch.isfinite(tensor)][0].item()!r}"
                                 " (a value to predict: task='regression')")
        elif tensor.dtype == torch.bool:
            pass
        elif tensor.dtype not in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64):
            raise TypeError(f"{name} must be integer class ids, got dtype {tensor.dtype}")
        tensor = tensor.to(torch.int64)
        if int(tensor.min()) < 0:
            raise ValueError(f"{name} must be class ids 0..K-1, got {int(tensor.min())}: encode the labels, one "
                             "mapping for every split (classes, y = np.unique(y, return_inverse=True); y_val = "
                             "np.searchsorted(classes, y_val)), or for a value to predict pass task='regression'")
        return tensor
    tensor = tensor.to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        row, _, found = _first_non_finite(tensor)
        raise ValueError(f"{name} contains {found} (the first non-finite value: row {row}; drop those rows or fill "
                         "them)")
    return tensor


def _first_non_finite(tensor: torch.Tensor, bad: torch.Tensor | None = None) -> tuple[int, int, str]:
    """(row, column of the flattened example, "NaN" / "inf" / "-inf") of the first value that is not finite (of
    those ``bad`` marks, where given)."""
    flat = tensor.reshape(tensor.shape[0], -1)
    bad = ~torch.isfinite(flat) if bad is None else bad.reshape(flat.shape)
    row, col = torch.nonzero(bad)[0].tolist()
    value = str(flat[row, col].item())
    return row, col, {"nan": "NaN"}.get(value, value)


def check_same_example_shape(a: list[torch.Tensor], b: list[torch.Tensor], name_a: str, name_b: str) -> None:
    shapes_a, shapes_b = [tuple(t.shape[1:]) for t in a], [tuple(t.shape[1:]) for t in b]
    if shapes_a != shapes_b:
        raise ValueError(f"{name_b} has examples of shape {shapes_b if len(b) > 1 else shapes_b[0]} but {name_a} has "
                         f"{shapes_a if len(a) > 1 else shapes_a[0]}")


def split(data: Any, name: str) -> tuple[Any, Any]:
    """``(X, y)`` from a tuple or list of two."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a tuple (X, y), got {type(data).__name__}"
                        + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""))
    return data[0], data[1]


def _is_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, torch.Tensor))


def _first_dimension(value: Any) -> int | None:
    return int(value.shape[0]) if getattr(value, "ndim", 0) >= 1 else None


def length(value: ArrayLike) -> int | None:
    """The number of rows of ``value``, or None when it has none (an error reported where it is converted)."""
    try:
        return len(value)
    except TypeError:
        return None
