"""Your own data: an array or a file (.npy, .npz, .csv, .tsv) as a ``Dataset``.

``from_array(x)`` splits a matrix into train/test rows by a seeded
permutation, ``load_file(path)`` reads a file and does the same while
recording where the data came from (``Dataset.source``: path, size and
sha256 of the file, key/columns, split), and ``load_source(source)`` reloads
that split, refusing a file that changed. ``read_array(path)`` is the reader
alone (``genlearn eval --samples``). Every problem with a file is a
ValueError that names the path and the problem (line numbers for CSV).
"""

from __future__ import annotations

import csv
import hashlib
import os
from typing import Any, Sequence

import numpy as np

from genlearn.data.registry import Dataset
from genlearn.data.validation import _check_seed, as_integer, check_data

__all__ = ["FILE_SUFFIXES", "from_array", "read_array", "load_file", "load_source"]

FILE_SUFFIXES = (".npy", ".npz", ".csv", ".tsv")
"""The file types ``read_array`` and ``load_file`` read."""

_FIRST = 5  # how many bad rows a message lists


def _check_split(n: int, test_fraction: Any, seed: Any, label: str) -> tuple[int, float, int]:
    try:
        f = float(test_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}") from None
    if not 0 < f < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n_test = max(1, int(round(n * f)))
    if n - n_test < 2:
        raise ValueError(f"{label}: {n} rows are too few to split: need at least 2 training rows and 1 test row "
                         f"(test_fraction {f})")
    return n_test, f, _check_seed(seed)


def _check_levels(x: np.ndarray, levels: Any, where, label: str) -> int:
    levels = as_integer(levels, "discrete_levels", "an integer >= 2")
    if levels < 2:
        raise ValueError(f"discrete_levels must be >= 2, got {levels}")
    bad = np.flatnonzero(np.any((x != np.floor(x)) | (x < 0) | (x >= levels), axis=1))
    if bad.size:
        row = np.asarray(x[bad[0]])
        value = row[(row != np.floor(row)) | (row < 0) | (row >= levels)][0]
        raise ValueError(f"{label}: with {levels} discrete levels every value must be an integer in [0, {levels}); "
                         f"{bad.size} rows are not, the first is {where(bad[0])} (value {value:g})")
    return levels


def _split(x: np.ndarray, test_fraction, seed, levels, name: str, source: dict, names=None, where=None,
           label: str | None = None) -> Dataset:
    """The seeded train/test split of ``from_array``; messages start with ``label`` (a path) or the name."""
    where, label = where or (lambda i: f"row {i}"), label or name
    if np.ndim(x) != 2:
        raise ValueError(f"{label}: expected an (n, d) array, got shape {np.shape(x)}"
                         + ("; for one feature use x.reshape(-1, 1)" if np.ndim(x) == 1 else ""))
    n_test, f, seed = _check_split(x.shape[0], test_fraction, seed, label)
    if levels is not None:
        levels = _check_levels(x, levels, where, label)
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    train = check_data(np.asarray(x[np.sort(perm[n_test:])]), f"{name} (train)")
    test = check_data(np.asarray(x[np.sort(perm[:n_test])]), f"{name} (test)")
    if levels is None:  # the families standardise continuous data by the train split's std
        flat = np.flatnonzero(np.ptp(train, axis=0) == 0)
        if flat.size:
            cols = ", ".join(repr(names[j]) if names else str(j) for j in flat[:_FIRST])
            raise ValueError(f"{label}: column(s) {cols} have zero variance in the training rows (constant "
                             f"{train[0, flat[0]]:g}); standardisation divides by the std: drop them")
    source = {**source, "test_fraction": f, "seed": seed, "levels": levels}
    return Dataset(name, train, test, levels, None, None, None, source)


def from_array(x: Any, *, test_fraction: float = 0.2, seed: int = 0, discrete_levels: int | None = None,
               name: str | None = None) -> Dataset:
    """An ``(n, d)`` array as a :class:`~genlearn.data.Dataset`, like the built-in ones.

    The rows are split by ``perm = np.random.default_rng(seed).permutation(n)``:
    the test rows are ``perm[:n_test]`` with ``n_test = max(1, round(n *
    test_fraction))``, the train rows the rest (each kept in file order), both
    float32. The families standardise by ``Dataset.train`` (adding the
    log-determinant to the NLL) as for the built-ins; with ``discrete_levels``
    ``K`` the values must be integers in ``{0..K-1}`` (``K = 256`` for 8-bit
    images) and the families dequantise and report bits/dim.

    Args:
      x: array-like ``(n, d)``, finite, ``n >= 3``.
      test_fraction: share of the rows held out, in (0, 1).
      seed: non-negative seed of the split.
      discrete_levels: ``K`` for integer data, else None.
      name: the dataset's name (default ``"array"``).

    Returns:
      A ``Dataset`` whose ``source`` records the split (``kind="array"``).

    Raises:
      ValueError: not 2-D, non-numeric, NaN/inf (the first bad row), too few
        rows, values outside the levels, or (continuous data) a constant column.
    """
    name = name or "array"
    arr = np.asarray(x)
    if arr.ndim == 2:
        arr = check_data(arr, name)
    return _split(arr, test_fraction, seed, discrete_levels, name, {"kind": "array"})


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_table(path: str, delimiter: str, columns: Sequence | None):
    """``(x float64, names or None, line number of each row)`` of a CSV/TSV file."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        rows, lines = [], []
        for row in reader:
            if row and any(cell.strip() for cell in row):
                rows.append([cell.strip() for cell in row])
                lines.append(reader.line_num)
    if not rows:
        raise ValueError(f"{path}: the file has no rows")

    def is_number(cell):
        try:
            float(cell)
            return True
        except ValueError:
            return cell == ""

    names = rows[0] if not all(map(is_number, rows[0])) else None
    if names is not None:
        rows, lines = rows[1:], lines[1:]
        if not rows:
            raise ValueError(f"{path}: the file has a header but no data rows")
    width = len(names) if names is not None else len(rows[0])
    for row, line in zip(rows, lines):
        if len(row) != width:
            raise ValueError(f"{path}: ragged rows: line {line} has {len(row)} fields, expected {width} "
                             f"like the {'header' if names is not None else 'first row'}")
    if columns is None:
        idx = list(range(width))
    elif names is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; the header has {names}")
        idx = [names.index(c) for c in columns]
    else:
        idx = _column_indices(columns, width, path)
    label = (lambda j: repr(names[j])) if names is not None else (lambda j: f"{j} (0-based)")
    x = np.empty((len(rows), len(idx)), np.float64)
    for k, j in enumerate(idx):
        cells = [row[j] or "nan" for row in rows]  # an empty field is a missing value
        try:
            x[:, k] = [float(c) for c in cells]  # Python's float decides, as in the header test
        except ValueError:
            i = next(i for i, c in enumerate(cells) if not is_number(c))
            raise ValueError(f"{path}: column {label(j)} is not numeric: line {lines[i]} has {cells[i]!r}"
                             + ("; choose the numeric columns with --columns" if columns is None else "")) from None
    return x, [names[j] for j in idx] if names is not None else None, lines


def _column_indices(columns: Sequence, width: int, path: str) -> list[int]:
    try:
        idx = [as_integer(int(c) if isinstance(c, str) else c, "column") for c in columns]
    except ValueError:
        raise ValueError(f"{path}: has no header, so columns are 0-based indices; got {list(columns)}") from None
    bad = [j for j in idx if not 0 <= j < width]
    if bad:
        raise ValueError(f"{path}: column index(es) {bad} out of range for {width} columns")
    return idx


def _read(path: str, key: str | None, columns: Sequence | None):
    """``(x, names, where)``: the (n, d) array (a memory map for .npy), column names, row labels."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FILE_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix or '(no extension)'!r}; "
                         f"use one of {', '.join(FILE_SUFFIXES)}")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    if key is not None and suffix != ".npz":
        raise ValueError(f"{path}: a key (--key {key}) only selects an array of a .npz file")
    try:
        if suffix in (".csv", ".tsv"):
            x, names, lines = _read_table(path, "," if suffix == ".csv" else "\t", columns)
            return x, names, lambda i: f"line {lines[i]}"
        if suffix == ".npy":
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.keys())
                if key is None and len(keys) != 1:
                    raise ValueError(f"{path}: holds the arrays {keys}; choose one with --key")
                if key is not None and key not in keys:
                    raise ValueError(f"{path}: no array {key!r}; it holds {keys}")
                x = npz[key or keys[0]]
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as err:
        raise ValueError(f"{path}: cannot read the file ({err})") from err
    except ValueError as err:
        if str(err).startswith(path):
            raise
        raise ValueError(f"{path}: not a readable {suffix} array ({err})") from err
    if x.ndim != 2:
        raise ValueError(f"{path}: expected an (n, d) array, got shape {x.shape}"
                         + ("; for one feature save x.reshape(-1, 1)" if x.ndim == 1 else ""))
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{path}: expected a real numeric array, got dtype {x.dtype}")
    if columns is not None:
        x = x[:, _column_indices(columns, x.shape[1], path)]
    return x, None, lambda i: f"row {i}"


def _nonfinite(path: str, x: np.ndarray, where, drop: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(x, bad)``: ``x`` without the rows holding NaN/inf (when ``drop``, else a ValueError), their indices."""
    bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1)) if x.dtype.kind == "f" else np.zeros(0, int)
    if bad.size and not drop:
        first = ", ".join(where(i) for i in bad[:_FIRST])
        raise ValueError(f"{path}: {bad.size} of {x.shape[0]} rows contain NaN or inf (first: {first}); "
                         "fix them or drop those rows with --drop-nonfinite (drop_nonfinite=True)")
    return (np.delete(np.asarray(x), bad, axis=0) if bad.size else x), bad


def read_array(path: str, *, key: str | None = None, columns: Sequence | None = None,
               drop_nonfinite: bool = False) -> tuple[np.ndarray, int]:
    """Reads an ``(n, d)`` matrix from a .npy (memory-mapped), .npz or .csv/.tsv file.

    A CSV/TSV file has a header when its first row is not all numbers; empty
    fields are missing values (NaN). ``columns`` choose columns by header name,
    else by 0-based index (arrays too); ``key`` names the array of a .npz file
    (needed when it holds several).

    Returns:
      ``(x, dropped)``: the numeric array (unconverted; a memory map when
      nothing needed dropping) and how many rows with NaN/inf were dropped.

    Raises:
      ValueError: naming the path and the problem: missing or unreadable file,
        unsupported extension, a non-numeric column (its name and line), ragged
        rows (the line), not 2-D, NaN/inf rows (the first ones) unless
        ``drop_nonfinite``.
    """
    x, _, where = _read(path, key, columns)
    x, bad = _nonfinite(os.fspath(path), x, where, drop_nonfinite)
    return x, int(bad.size)


def load_file(path: str, *, key: str | None = None, columns: Sequence | None = None, test_fraction: float = 0.2,
              seed: int = 0, discrete_levels: int | None = None, drop_nonfinite: bool = False) -> Dataset:
    """A data file as a ``Dataset``: :func:`read_array`, then the split of :func:`from_array`.

    The dataset's name is the file's stem; ``Dataset.source`` records the
    absolute path, size and sha256 of the file, ``key``, ``columns``,
    ``drop_nonfinite`` (and ``dropped_nonfinite``, the rows dropped), the split
    and the levels, so that :func:`load_source` reloads the same split.
    """
    path = os.fspath(path)
    x, names, where = _read(path, key, columns)
    n = x.shape[0]
    x, bad = _nonfinite(path, x, where, drop_nonfinite)
    if bad.size:  # row labels of the kept rows
        kept, file_where = np.delete(np.arange(n), bad), where
        where = lambda i: file_where(kept[i])  # noqa: E731
    stat = os.stat(path)
    source = {"kind": "file", "path": os.path.abspath(path), "size": stat.st_size, "sha256": _sha256(path),
              "key": key, "columns": None if columns is None else list(columns),
              "drop_nonfinite": bool(drop_nonfinite), "dropped_nonfinite": int(bad.size)}
    name = os.path.splitext(os.path.basename(path))[0] + (f"-{key}" if key else "")
    return _split(x, test_fraction, seed, discrete_levels, name, source, names, where, path)


def load_source(source: dict) -> Dataset:
    """Reloads the dataset a ``Dataset.source`` of :func:`load_file` describes, the same split.

    Raises:
      ValueError: the file is gone, or its size or sha256 changed; an
        in-memory array (``kind="array"``), which cannot be reloaded.
    """
    if source.get("kind") != "file":
        raise ValueError("the data were an in-memory array (genlearn.data.from_array), which cannot be reloaded; "
                         "pass the dataset")
    path = source["path"]
    if not os.path.isfile(path):
        raise ValueError(f"the data file {path} is gone")
    if os.stat(path).st_size != source["size"] or _sha256(path) != source["sha256"]:
        raise ValueError(f"the data file {path} changed since the run was trained (sha256 {source['sha256'][:12]}… "
                         "expected); restore it or fit again")
    return load_file(path, key=source["key"], columns=source["columns"], test_fraction=source["test_fraction"],
                     seed=source["seed"], discrete_levels=source["levels"], drop_nonfinite=source["drop_nonfinite"])
