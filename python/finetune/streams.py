"""Streamed datasets: examples read by index as the C++ loop asks for them, DataLoader workers reading ahead.

Data that does not fit in memory -- a map-style ``torch.utils.data.Dataset`` (``__len__`` and ``__getitem__``
returning ``(inputs, label)``) or a memory-mapped array (``np.memmap``, ``np.load(path, mmap_mode="r")``) -- becomes
a :class:`Stream`. The C++ loop still decides everything about order (the seeded stratified sample, each epoch's
permutation, a rank's share, the resume position): before an epoch it *plans* the batches it will fetch, in order,
and a ``torch.utils.data.DataLoader`` over that plan (``num_workers``, ``prefetch``: the DataLoader's
``num_workers`` and ``prefetch_factor``) reads them ahead in worker processes while the loop trains on the
current one. The labels stay in memory (sampling and class counts read them alone); they come from the dataset's
``targets`` or ``labels`` attribute, or from ``(dataset, labels)``, never by reading every example.

A dataset with a method ``load(index, seed)`` (``finetune.datasets.ImageFolder``) is read through it: ``seed`` is
an int drawn from (the run's seed, the epoch, the index) for a training read -- its own random augmentation then
repeats exactly, whichever worker reads the example, and across a resume -- and None for an evaluation.
"""

from __future__ import annotations

import collections
import collections.abc
import json
import mmap
import os
import time
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.utils.data

LABEL_ATTRIBUTES = ("targets", "labels")  # torchvision's ImageFolder/MNIST and Hugging Face-style datasets


def is_dataset(value: Any) -> bool:
    """A map-style dataset finetune streams: a ``torch.utils.data.Dataset``, or any object with ``__len__`` and
    ``__getitem__`` that is not data in memory (an array, a sparse matrix, a data frame: anything with a ``shape``
    or ``__array__``; a sequence; a mapping such as a tokenizer's ``BatchEncoding``)."""
    if isinstance(value, torch.utils.data.IterableDataset):
        raise TypeError(f"{type(value).__name__} is an IterableDataset; finetune reads map-style datasets "
                        "(__len__ and __getitem__), whose examples it can ask for by index in the order it decides")
    if isinstance(value, torch.utils.data.Dataset):
        return True
    if isinstance(value, (collections.abc.Sequence, collections.abc.Mapping, np.ndarray, torch.Tensor, Stream)) or \
            hasattr(value, "shape") or hasattr(value, "__array__"):
        return False
    return hasattr(value, "__len__") and hasattr(value, "__getitem__")


def is_mapped(value: Any) -> bool:
    """A memory-mapped numpy array backed by a file (``np.memmap``, ``np.load(..., mmap_mode=...)``)."""
    return isinstance(value, np.memmap) and getattr(value, "filename", None) is not None and \
        getattr(value, "_mmap", None) is not None


def labels_of(dataset: Any, name: str) -> Any:
    """The labels a dataset carries (``targets`` or ``labels``), or a ValueError saying how to give them."""
    for attribute in LABEL_ATTRIBUTES:
        labels = getattr(dataset, attribute, None)
        if labels is not None:
            return labels
    raise ValueError(f"{name} is a dataset ({type(dataset).__name__}) without a `targets` or `labels` attribute: "
                     f"pass ({name}, labels) or labels=, one label per example (finetune reads the labels before "
                     "any example)")


def check_same_classes(train: Any, val: Any) -> None:
    """Two datasets that name their classes (an ImageFolder's sub-folders) must name the same ones in the same
    order: label 1 of the one is label 1 of the other."""
    if getattr(train, "classes", None) is not None and getattr(val, "classes", None) is not None and \
            list(train.classes) != list(val.classes):
        raise ValueError(f"val's classes {list(val.classes)} differ from train_data's {list(train.classes)}: its labels "
                         "would mean other classes; open it with the training classes (ImageFolder(..., "
                         "classes=train.classes))")


def split(value: Any, name: str) -> tuple[Any, Any]:
    """``(X, y)`` from a dataset (its labels from its attributes) or from a tuple, as finetune.data.split."""
    from . import data

    if is_dataset(value):
        return value, labels_of(value, name)
    return data.split(value, name)


def with_labels(value: Any, labels: Any, name: str) -> Any:
    """``(value, labels)`` for a dataset given ``labels=``; ``value`` itself without them."""
    if labels is None:
        return value
    if isinstance(value, (tuple, list)):
        raise ValueError(f"labels= labels a dataset's examples, and {name} is a tuple (X, y) with its labels already: "
                         "pass one of them")
    if not is_dataset(value):
        raise ValueError(f"labels= labels a dataset's examples, and {name} is a {type(value).__name__}")
    return value, labels


def streamed(x: Any, y: Any, name: str, task: str, dtype: torch.dtype, cfg: Any,
             labeled: bool = True) -> tuple[Stream, torch.Tensor] | None:
    """(the stream, its targets) when ``x`` is a dataset, a memory-mapped array or a stream, read with ``cfg``'s
    workers; None for data in memory."""
    from . import data

    if isinstance(x, Stream):
        source, labeled = x, x.labeled
    elif isinstance(x, MappedRows):
        source = x
    elif is_mapped(x):
        source = MappedRows.memmap(x, name)
    elif is_dataset(x):
        source = x
    else:
        return None
    if cfg.num_workers == 0 and cfg.prefetch != 2:
        raise ValueError(f"prefetch={cfg.prefetch!r} sets how many batches each worker reads ahead, and num_workers=0 "
                         "reads in the training process: set num_workers too, or leave prefetch unset")
    if task == "ranking":
        raise ValueError(f"{name} is streamed ({type(x).__name__}), and task='ranking' draws negatives over every "
                         "item id: pass its (user, item) pairs as an array in memory")
    targets = data.targets(y, f"{name}'s labels", task, len(source)) if y is not None else \
        torch.zeros(len(source), dtype=torch.float32)
    settings = dict(dtype=dtype, num_workers=cfg.num_workers, prefetch=cfg.prefetch, seed=cfg.seed)
    if isinstance(x, Stream):  # a stream keeps its own labels where none are given (predict)
        stream = x.with_settings(**settings)
        return (stream.with_targets(targets), targets) if y is not None else (stream, stream.targets)
    return Stream(source, targets, name=name, labeled=labeled, check_labels=y is not None, **settings), targets


def head(inputs: list[torch.Tensor] | Stream, k: int) -> list[torch.Tensor]:
    """The first ``k`` examples' inputs, in memory or streamed."""
    return inputs.head(k) if isinstance(inputs, Stream) else [t[:k] for t in inputs]


def rows(inputs: list[torch.Tensor] | Stream) -> int:
    """The number of examples, in memory or streamed."""
    return len(inputs) if isinstance(inputs, Stream) else int(inputs[0].shape[0])


def batches(inputs: list[torch.Tensor] | Stream, batch_size: int) -> Iterator[list[torch.Tensor]]:
    """The examples in order, ``batch_size`` at a time: slices in memory, or a stream's evaluation reads (planned
    first, so that its workers read ahead)."""
    n = rows(inputs)
    if not isinstance(inputs, Stream):
        for start in range(0, n, batch_size):
            yield [t[start:start + batch_size] for t in inputs]
        return
    planned = [torch.arange(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    inputs.plan(planned, -1)
    for batch in planned:
        yield inputs.fetch(batch)


def varying(inputs: list[torch.Tensor] | Stream | None) -> str | None:
    """Why an example's inputs may differ from one epoch's read to the next (so that running the frozen part once
    would change the run), or None: arrays and maps never do, an ImageFolder only when it augments, and a dataset
    of one's own may (random transforms in its ``__getitem__``)."""
    if not isinstance(inputs, Stream) or isinstance(inputs.source, MappedRows):
        return None
    if callable(getattr(inputs.source, "load", None)) and hasattr(inputs.source, "augment"):
        return "the dataset augments each training read (augment=True)" if inputs.source.augment else None
    return (f"{inputs.name} is a {type(inputs.source).__name__}, whose items may differ from one read to the next "
            "(random transforms)")


def check_unused(cfg: Any) -> None:
    """num_workers and prefetch read a streamed dataset; with every split in memory they would do nothing."""
    for field, default in (("num_workers", 0), ("prefetch", 2)):
        if getattr(cfg, field) != default:
            raise ValueError(f"{field}={getattr(cfg, field)!r} sets how a streamed dataset is read ahead (a torch "
                             "Dataset or a memory-mapped X), and the data is in memory: leave it unset")


class MappedRows(torch.utils.data.Dataset):
    """The rows of an array stored in a file -- a memory-mapped numpy array (``MappedRows.memmap``, what finetune
    makes of an ``np.memmap`` X) or a tensor in a safetensors file (``MappedRows.safetensors(path, name)``, passed
    as X) -- read with ``os.pread``: only the rows a batch needs come into memory, and none stays mapped in the
    process (a row read through a map would count in its resident memory)."""

    def __init__(self, path: str | os.PathLike, offset: int, dtype: torch.dtype, shape: Sequence[int], name: str):
        if len(shape) == 0 or shape[0] == 0:
            raise ValueError(f"{name} is an empty array in a file (shape {tuple(shape)})")
        self.path, self.offset, self.dtype, self.name = os.fspath(path), int(offset), dtype, name
        self.row_shape = tuple(int(n) for n in shape[1:])
        self.rows = int(shape[0])
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        self._file: tuple[int, int] | None = None  # (pid, fd): each worker process opens the file itself

    @classmethod
    def memmap(cls, array: np.memmap, name: str) -> "MappedRows":
        if not array.flags.c_contiguous:
            raise ValueError(f"{name} is a memory-mapped array that is not C-contiguous (strides {array.strides}); "
                             "finetune reads its rows from the file: save it in C order")
        try:
            dtype = torch.from_numpy(np.empty(0, dtype=array.dtype)).dtype
        except TypeError:
            raise TypeError(f"{name} is a memory-mapped array of dtype {array.dtype}; finetune reads numbers") from None
        return cls(array.filename, _file_offset(array), dtype, array.shape, name)

    @classmethod
    def safetensors(cls, path: str | os.PathLike, tensor: str) -> "MappedRows":
        """Tensor ``tensor`` of the safetensors file ``path``, its rows read when a batch needs them (the file's
        header read here: 8 bytes of length, then JSON naming each tensor's dtype, shape and byte range)."""
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            length = int.from_bytes(file.read(8), "little") if size >= 8 else -1
            if not 0 < length <= size - 8:
                raise ValueError(f"'{path}' is not a safetensors file (its header length says {length}, the file has "
                                 f"{size} bytes)")
            try:
                header = json.loads(file.read(length))
            except ValueError as error:
                raise ValueError(f"'{path}' has a safetensors header that is not JSON: {error}") from None
        names = sorted(k for k in header if k != "__metadata__")
        if tensor not in names:
            raise ValueError(f"'{path}' has no tensor {tensor!r}; its tensors: {names}")
        entry = header[tensor]
        dtype = SAFETENSORS_DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise ValueError(f"'{path}': tensor {tensor!r} has dtype {entry.get('dtype')!r}; finetune reads "
                             f"{sorted(SAFETENSORS_DTYPES)}")
        shape, (begin, end) = [int(n) for n in entry["shape"]], entry["data_offsets"]
        rows = cls(path, 8 + length + begin, dtype, shape, f"{os.fspath(path)}:{tensor}")
        if end - begin != rows.rows * rows.row_bytes or 8 + length + end > size:
            raise ValueError(f"'{path}': tensor {tensor!r} of shape {shape} ({entry['dtype']}) does not match its byte "
                             f"range [{begin}, {end}) in a file of {size} bytes")
        return rows

    def __len__(self) -> int:
        return self.rows

    def _fd(self) -> int:
        if self._file is None or self._file[0] != os.getpid():
            self._file = (os.getpid(), os.open(self.path, os.O_RDONLY))
        return self._file[1]

    def rows_at(self, indices: Sequence[int]) -> torch.Tensor:
        fd = self._fd()
        out = bytearray(len(indices) * self.row_bytes)
        view = memoryview(out)
        for k, i in enumerate(indices):
            got = os.preadv(fd, [view[k * self.row_bytes:(k + 1) * self.row_bytes]], self.offset + int(i) * self.row_bytes)
            if got != self.row_bytes:
                raise ValueError(f"{self.path}: row {i} is cut short ({got} of {self.row_bytes} bytes): the file is "
                                 "shorter than the array's shape says")
        rows = torch.frombuffer(out, dtype=self.dtype) if out else torch.empty(0, dtype=self.dtype)
        return rows.reshape(len(indices), *self.row_shape)

    def __getitem__(self, i: int) -> torch.Tensor:
        if not -self.rows <= i < self.rows:
            raise IndexError(f"row {i} of {self.name}, which has {self.rows} rows")
        return self.rows_at([i % self.rows])[0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}


def _file_offset(array: np.memmap) -> int:
    """Where the array's first element is in its file. ``array.offset`` is the mapped array's: a slice of it
    (``x[1000:]``) keeps its parent's offset, so the position is read off the shared map instead -- the map starts at
    the offset rounded down to the allocation granularity, as np.memmap maps it."""
    start = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY
    base = np.frombuffer(array._mmap, dtype=np.uint8).ctypes.data
    return start + array.ctypes.data - base


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool}


class _Batches(torch.utils.data.Dataset):
    """Reads one batch: ``__getitems__`` (called by the DataLoader with a batch's indices into the source, in a
    worker) returns ``(inputs, labels)``, each example's inputs stacked."""

    def __init__(self, source: Any, labeled: bool, dtype: torch.dtype, name: str):
        self.source, self.labeled, self.dtype, self.name = source, labeled, dtype, name

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, reads: list[tuple[int, int | None]]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """``reads``: (index, seed) pairs, the seed None for an evaluation (see the module's docstring)."""
        where = [i for i, _ in reads]
        if isinstance(self.source, MappedRows):
            return [self._cast(self.source.rows_at(where), where)], None
        load = getattr(self.source, "load", None)
        inputs, labels = [], []
        for i, seed in reads:
            try:
                item = load(i, seed) if callable(load) else self.source[i]
            except Exception as error:  # noqa: BLE001 -- any error of the user's dataset, named and one line
                message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
                kind = "" if type(error) is ValueError else f"{type(error).__name__}: "  # a ValueError says what
                raise ValueError(f"{self.name}[{i}]: {kind}{message}") from None
            x, label = _split_item(item, i, self.name) if self.labeled else \
                (list(item) if isinstance(item, tuple) else [item], None)
            inputs.append(x)
            labels.append(label)
        columns = []
        for c in range(len(inputs[0])):
            values = []
            for i, x in zip(where, inputs):
                if len(x) != len(inputs[0]):
                    raise ValueError(f"{self.name}[{i}] has {len(x)} inputs, {self.name}[{where[0]}] {len(inputs[0])}")
                try:
                    values.append(torch.as_tensor(x[c]))
                except (RuntimeError, TypeError, ValueError):
                    raise TypeError(f"{self.name}[{i}]'s input {c} is a {type(x[c]).__name__}; an input must be a "
                                    "tensor, an array or numbers (a PIL image: convert it, e.g. np.asarray)") from None
                if values[-1].shape != values[0].shape:
                    raise ValueError(f"{self.name}[{i}]'s input {c} has shape {tuple(values[-1].shape)} but "
                                     f"{self.name}[{where[0]}]'s has {tuple(values[0].shape)}: a batch stacks "
                                     "examples of one shape")
            # default_collate stacks into shared memory in a worker: the batch crosses to the loop uncopied
            columns.append(self._cast(torch.utils.data.default_collate(values), where))
        if not self.labeled:
            return columns, None
        try:
            return columns, torch.as_tensor(np.asarray(labels))
        except (TypeError, ValueError, RuntimeError):
            bad = next((i for i, label in zip(where, labels) if not isinstance(label, (int, float, np.number))
                        and not (hasattr(label, "shape") and np.asarray(label).dtype.kind in "biuf")), where[0])
            raise ValueError(f"{self.name}[{bad}]'s label is {labels[where.index(bad)]!r}; a label is a class id or "
                             "a number (or an array of numbers)") from None

    def _cast(self, column: torch.Tensor, where: list[int]) -> torch.Tensor:
        """As finetune.data.features treats arrays in memory: floating (and uint8/bool) inputs in the model's
        dtype, finite; integer ids as they are."""
        if column.is_floating_point() or column.dtype in (torch.uint8, torch.bool):
            column = column.to(self.dtype)
            # A sum is finite when every value is (15x cheaper than isfinite over a batch of 64 images here); only
            # a sum that is not -- a NaN or inf, or an overflow of huge values -- is looked at value by value.
            if column.is_floating_point() and not bool(torch.isfinite(column.sum())):
                finite = torch.isfinite(column.reshape(column.shape[0], -1)).all(1)
                if not bool(finite.all()):
                    raise ValueError(f"{self.name}[{where[int((~finite).nonzero()[0])]}] contains NaN or inf")
        elif column.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64):
            raise TypeError(f"{self.name}[{where[0]}] has inputs of dtype {column.dtype}; finetune reads numbers")
        return column.contiguous()


def _split_item(item: Any, i: int, name: str) -> tuple[list[Any], Any]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise ValueError(f"{name}[{i}] must be (inputs, label), got {type(item).__name__}"
                         + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else ""))
    x, label = item
    if isinstance(x, dict):
        raise TypeError(f"{name}[{i}]'s inputs are a dict; a streamed dataset gives its inputs by position (a tensor, "
                        "or a tuple of tensors in the order the model's forward takes them)")
    # A tuple (or a list of arrays) is several inputs; a list of numbers is one input's values.
    several = isinstance(x, tuple) or (isinstance(x, list) and bool(x) and hasattr(x[0], "shape"))
    return (list(x) if several else [x]), label


def _one_line(error: BaseException) -> str:
    """The last line of an error's message (a DataLoader worker's error carries the worker's traceback before it),
    without its type name."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    line = lines[-1].strip() if lines else type(error).__name__
    prefix = f"{type(error).__name__}: "
    return line[len(prefix):] if line.startswith(prefix) else line


def _as_is(batch: Any) -> Any:  # the DataLoader's collate_fn: _Batches has collated already
    return batch


class _Plan(torch.utils.data.Sampler):
    """The DataLoader's batch sampler: the positions of the batches the loop planned, replaced at each plan."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Reader:
    """Reads a source's batches for every stream over it (a run's training slice and validation slice, the recipe's
    phases): one DataLoader, its workers started once, reading ahead whichever plan came last. The C++ loop fetches
    one plan to its end before it plans again (an epoch, then its validation); a fetch the plan does not have next
    is read when asked and drops the rest of the plan."""

    def __init__(self, source: Any, labeled: bool, dtype: torch.dtype, name: str, num_workers: int, prefetch: int,
                 seed: int):
        self.batches = _Batches(source, labeled, dtype, name)
        self.settings = (dtype, num_workers, prefetch, seed)
        self.num_workers, self.prefetch, self.seed = num_workers, prefetch, seed
        self._loader: torch.utils.data.DataLoader | None = None
        self._plan = _Plan()
        self._iterator: Any = None
        self._expected: collections.deque[list[int]] = collections.deque()
        self._epoch = -1  # of the last plan: the seeds of its reads (-1: an evaluation's, none)
        self.fetched = 0  # batches read
        self.unplanned = 0  # of those, batches no plan had next (read when asked, the rest of the plan dropped)
        self.wait_seconds = 0.0  # the loop's time in fetch: waiting for workers, or reading itself

    def report(self) -> dict[str, Any]:
        """What reading cost the loop (``Result.streaming``)."""
        return {"num_workers": self.num_workers, "prefetch": self.prefetch, "batches": self.fetched,
                "unplanned": self.unplanned, "wait_seconds": round(self.wait_seconds, 3)}

    def reads(self, where: list[int]) -> list[tuple[int, int | None]]:
        """Each index with its read's seed: drawn from (the run's seed, the plan's epoch, the index)."""
        if self._epoch < 0:
            return [(i, None) for i in where]
        base = (self.seed * 1_000_003 + self._epoch) * 1_000_000_007
        return [(i, (base + i) % 2**63) for i in where]

    def plan(self, batches: list[list[int]], epoch: int = -1) -> None:
        self._expected = collections.deque(batches)
        self._epoch = epoch
        self._iterator = None
        if self.num_workers == 0 or not batches:
            return
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self.batches, batch_sampler=self._plan, num_workers=self.num_workers, collate_fn=_as_is,
                prefetch_factor=self.prefetch, persistent_workers=True,
                # The workers' seeds from a generator of their own: the loop's generator (dropout) is not drawn from.
                generator=torch.Generator().manual_seed(self.seed))
        self._plan.batches = [self.reads(b) for b in batches]
        self._iterator = iter(self._loader)

    def fetch(self, where: list[int]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        start = time.perf_counter()
        try:
            return self._fetch(where)
        finally:
            self.wait_seconds += time.perf_counter() - start

    def _fetch(self, where: list[int]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        planned = bool(self._expected) and self._expected[0] == where
        if planned:
            self._expected.popleft()
        else:
            self._expected.clear()
            self._iterator = None
            self.unplanned += 1
        self.fetched += 1
        if planned and self._iterator is not None:
            try:
                return next(self._iterator)
            except (KeyboardInterrupt, SystemExit):
                raise
            except (ValueError, TypeError) as error:  # a worker's error: its one line, not the worker's traceback
                raise type(error)(_one_line(error)) from None
            except Exception as error:  # noqa: BLE001
                raise RuntimeError(f"{self.batches.name}: {type(error).__name__}: {_one_line(error)}") from None
        return self.batches.__getitems__(self.reads(where))  # no workers, or a batch no plan had next


class Stream:
    """A dataset's inputs fetched by index for the C++ loop (``ExampleSource`` in csrc/dataset.h), with its labels
    in memory. Example ``i`` of the stream is ``source[indices[i]]`` (``indices``: a subset, e.g. the recipe's
    validation slice), or ``source[i]``. Streams over one source with the same settings share its reader."""

    def __init__(self, source: Any, targets: torch.Tensor, *, name: str, dtype: torch.dtype = torch.float32,
                 num_workers: int = 0, prefetch: int = 2, seed: int = 0, indices: torch.Tensor | None = None,
                 labeled: bool = True, check_labels: bool = True, reader: _Reader | None = None):
        self.source, self.targets, self.name, self.indices = source, targets, name, indices
        # Items are (inputs, label) -- a map's rows are inputs alone, their labels given beside them -- and each
        # label read is checked against `targets` (not where there are none: predict)
        self.labeled = labeled and not isinstance(source, MappedRows)
        self.check_labels = check_labels and self.labeled
        self.reader = reader or _Reader(source, self.labeled, dtype, name, num_workers, prefetch, seed)

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.source)

    def _derived(self, targets: torch.Tensor, indices: torch.Tensor | None, reader: _Reader) -> "Stream":
        return Stream(self.source, targets, name=self.name, indices=indices, labeled=self.labeled,
                      check_labels=self.check_labels, reader=reader)

    def with_settings(self, *, dtype: torch.dtype, num_workers: int, prefetch: int, seed: int) -> "Stream":
        """The same examples read in ``dtype`` with these workers (a run's settings)."""
        settings = (dtype, num_workers, prefetch, seed)
        reader = self.reader if settings == self.reader.settings else \
            _Reader(self.source, self.labeled, dtype, self.name, num_workers, prefetch, seed)
        return self._derived(self.targets, self.indices, reader)

    def with_targets(self, targets: torch.Tensor) -> "Stream":
        """The same examples with these labels (one per example, as the stream's own, checked when read)."""
        return self._derived(targets, self.indices, self.reader)

    def subset(self, positions: torch.Tensor) -> "Stream":
        """Examples ``positions`` of this stream, in that order, as a stream."""
        positions = torch.as_tensor(positions, dtype=torch.int64)
        indices = self.indices.index_select(0, positions) if self.indices is not None else positions
        return self._derived(self.targets.index_select(0, positions), indices, self.reader)

    def head(self, k: int) -> list[torch.Tensor]:
        """The inputs of the first ``k`` examples (tracing a model, checking an output), read here."""
        positions = torch.arange(min(k, len(self)))
        inputs, labels = self.reader.batches.__getitems__([(i, None) for i in self._where(positions)])
        self._check_labels(positions, labels)
        return inputs

    def plan(self, batches: list[torch.Tensor], epoch: int = -1) -> None:
        """The batches the loop fetches next, in order, for training epoch ``epoch`` (-1: an evaluation): with
        workers, they start reading them now."""
        self.reader.plan([self._where(b) for b in batches], epoch)

    def fetch(self, positions: torch.Tensor) -> list[torch.Tensor]:
        """The inputs of the examples ``positions``: the next planned batch when it is that one, else read here."""
        inputs, labels = self.reader.fetch(self._where(positions))
        self._check_labels(positions, labels)
        return inputs

    def _where(self, positions: torch.Tensor) -> list[int]:
        return (self.indices.index_select(0, positions) if self.indices is not None else positions).tolist()

    def _check_labels(self, positions: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Each example's own label must be the one the run samples and weighs by (its ``targets``/``labels``)."""
        if labels is None or not self.check_labels:
            return
        expected = self.targets.index_select(0, positions)
        got = labels.to(expected.dtype).reshape(expected.shape) if labels.numel() == expected.numel() else None
        if got is None or not torch.equal(got, expected):
            bad = 0 if got is None else int((got != expected).reshape(len(positions), -1).any(1).nonzero()[0])
            where = self._where(positions)[bad]
            shown = labels.reshape(len(positions), -1)[bad] if got is not None else labels
            shown = shown.item() if shown.numel() == 1 else shown.tolist()
            raise ValueError(f"{self.name}[{where}] has label {shown} but the labels given for it say "
                             f"{expected[bad].tolist()}: pass the dataset's own labels")
