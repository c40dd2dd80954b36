"""Reference problems: a dataset, its candidate models and its figures.

A problem package registers a :class:`Problem` under the entry-point group
``jaxinv.problems``; the ``jaxinv`` command finds it there, so the framework
never imports a particular problem and third-party packages can add their own::

    [project.entry-points."jaxinv.problems"]
    my-problem = "my_package.my_module:problem"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .model import Model

__all__ = ["Dataset", "LabelledTable", "Problem", "available_problems", "load_problem", "pick_grid",
           "read_labelled_table", "read_table"]

ENTRY_POINT_GROUP = "jaxinv.problems"


def read_table(path, columns: tuple[str, ...], n_optional: int = 0, min_rows: int = 3) -> np.ndarray:
    """A numeric comma-separated table, checked, as an array ``(rows, columns)``.

    Blank lines and ``#`` comments are skipped, and a first row that is not numeric is
    taken as a header.  Every row must have ``len(columns) - n_optional`` to
    ``len(columns)`` entries (the last ``n_optional`` columns may be absent from the
    whole file).  Errors name the file and the row: missing file, empty file, no data
    rows, wrong number of columns, non-numeric or non-finite entries, too few rows.

    Args:
        path: the file.
        columns: column names, for messages (e.g. ``("x", "y", "sigma")``).
        n_optional: how many trailing columns may be left out.
        min_rows: the fewest data rows accepted.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    text = path.read_text().strip()
    if not text:
        raise ValueError(f"{path} is empty")
    rows = [r for r in text.splitlines() if r.strip() and not r.lstrip().startswith("#")]
    if rows:
        try:
            float(rows[0].split(",")[0])
        except ValueError:
            rows = rows[1:]  # header
    if not rows:
        raise ValueError(f"{path} has no data rows")
    allowed = range(len(columns) - n_optional, len(columns) + 1)
    expected = " or ".join(f"{k} ({', '.join(columns[:k])})" for k in allowed)
    table = []
    for i, row in enumerate(rows, start=1):
        cells = row.split(",")
        if len(cells) not in allowed:
            raise ValueError(f"{path}: row {i} has the wrong number of columns ({len(cells)}); expected {expected}")
        try:
            table.append([float(c) for c in cells])
        except ValueError:
            raise ValueError(f"{path}: row {i} has a non-numeric entry: {row!r}") from None
    if len({len(r) for r in table}) != 1:
        raise ValueError(f"{path}: rows have different numbers of columns; expected {expected} in every row")
    table = np.asarray(table)
    bad = int(np.sum(~np.isfinite(table)))
    if bad:
        raise ValueError(f"{path}: {bad} non-finite (NaN or infinite) entr{'y' if bad == 1 else 'ies'}")
    if table.shape[0] < min_rows:
        raise ValueError(f"{path}: need at least {min_rows} rows, got {table.shape[0]}")
    return table


@dataclass(frozen=True)
class LabelledTable:
    """A table read by :func:`read_labelled_table`.

    Attributes:
        header: the column names (label columns first).
        labels: the label cells of every numeric row, ``(rows, label_columns)`` strings.
        values: the numeric cells, ``(rows, columns - label_columns)``.
        text_rows: ``{label: cells}`` of the rows kept as text (e.g. a ``unit`` row).
    """

    header: tuple
    labels: list
    values: np.ndarray
    text_rows: dict


def read_labelled_table(path, label_columns: int = 1, text_rows=(), min_rows: int = 1) -> LabelledTable:
    """A comma-separated table with a header, ``label_columns`` text columns (a sample name,
    a class, ...) and numeric cells, checked.

    ``#`` comment lines and blank lines are skipped.  Rows whose first cell is in
    ``text_rows`` (e.g. ``("unit",)``) are kept as text.  Errors name the file and the row
    (its line number in the file):
    missing or empty file, no data rows, wrong number of columns, a non-numeric cell.
    Numeric cells may be NaN or infinite here; the problem's own checks say what is allowed.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    import csv

    lines = [(number, line) for number, line in enumerate(path.read_text().splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    rows = [(number, next(csv.reader([line]))) for number, line in lines]
    if len(rows) < 2:
        raise ValueError(f"{path} has no data rows")
    header = tuple(c.strip() for c in rows[0][1])
    if len(header) <= label_columns:
        raise ValueError(f"{path}: the header has no value columns after {label_columns} label column(s)")
    labels, values, text = [], [], {}
    for i, row in rows[1:]:
        if len(row) != len(header):
            raise ValueError(f"{path}: row {i} has {len(row)} columns, the header has {len(header)}")
        first = row[0].strip()
        if first in text_rows:
            text[first] = [c.strip() for c in row[1:]]
            continue
        try:
            values.append([float(c) for c in row[label_columns:]])
        except ValueError:
            raise ValueError(f"{path}: row {i} ({first!r}) has a non-numeric entry") from None
        labels.append([c.strip() for c in row[:label_columns]])
    if len(values) < min_rows:
        raise ValueError(f"{path}: need at least {min_rows} data row(s), got {len(values)}")
    return LabelledTable(header, labels, np.asarray(values, float).reshape(len(values), -1), text)


def pick_grid(grid, indices=None) -> list[float]:
    """Entries of a hyperparameter grid picked by 1-based ``indices`` (the CLI's
    ``--select`` for problems whose models are a grid), or the whole grid."""
    grid = [float(v) for v in np.atleast_1d(grid)]
    if indices is None:
        return grid
    bad = [k for k in indices if not 1 <= int(k) <= len(grid)]
    if bad:
        raise ValueError(f"--select indexes the smoothness grid 1..{len(grid)}, got {bad}")
    return [grid[int(k) - 1] for k in indices]


@dataclass(frozen=True)
class Dataset:
    """One measured dataset.

    Attributes:
        x: the independent variable(s) the forward model needs (e.g. delays in s).
        y: the observations (what the likelihood scores).
        sigma: per-point standard errors when the source gives them, else ``None``.
        meta: free-form provenance and units (``{"source": ..., "x_unit": ...}``).
    """

    x: Any
    y: np.ndarray
    sigma: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        y = np.asarray(self.y, dtype=float)
        if y.size == 0:
            raise ValueError("dataset is empty")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"dataset contains {int(np.sum(~np.isfinite(y)))} non-finite observation(s)")
        if self.sigma is not None:
            s = np.asarray(self.sigma, dtype=float)
            if s.shape != y.shape:
                raise ValueError(f"sigma has shape {s.shape}, observations have shape {y.shape}")
            if not np.all(np.isfinite(s)) or np.any(s <= 0):
                raise ValueError("sigma must be positive and finite for every point")


@dataclass(frozen=True)
class Problem:
    """A reference problem.

    Attributes:
        name: command-line name (``jaxinv run NAME``).
        description: one line for ``jaxinv problems``.
        models: ``(dataset, **options) -> {model name: Model}``, the candidates.
        default_data: ``() -> Dataset``, the embedded dataset.
        load_data: ``(path) -> Dataset``, a user's file or folder.
        figures: ``(selection, dataset, out_dir, **options) -> list of written paths``;
            ``jaxinv run --option KEY=VALUE`` passes the keys it names as keywords here
            (they shape the outputs), the others to ``models``.
        n_components: ``(model name) -> K`` for the summary (optional).
        fit_options: ``(dataset) -> dict`` of options the problem recommends for
            :func:`~jaxinv.map_estimate` on its models (optional): starting points
            (``init``) from a conventional estimate where prior draws start badly,
            ``max_steps``, ...  ``jaxinv run`` passes them for ``--method laplace|nuts``
            (and starts NUTS chains from the Laplace approximation at that MAP).
        default_method: the ``jaxinv run`` method when ``--method`` is not given
            (``"laplace"``; ``"nuts"`` where the Laplace approximation does not hold).
        run: for a problem whose answer is an estimator rather than a free-energy choice
            among models (a matrix factorisation, a cross-validated classifier):
            ``(dataset, out_dir, key, **options) -> summary`` fits it, writes its figures
            into ``out_dir`` and returns a JSON-serialisable dict with a ``"report"`` text
            and a ``"figures"`` list of paths.  ``jaxinv run`` then calls it (with the
            ``--option`` keys) instead of fitting ``models``, which may be ``None``.
    """

    name: str
    description: str
    models: Callable[..., dict[str, Model]] | None
    default_data: Callable[[], Dataset]
    load_data: Callable[[Path], Dataset]
    figures: Callable[..., list] | None = None
    n_components: Callable[[str], int | None] | None = None
    fit_options: Callable[[Dataset], dict] | None = None
    default_method: str = "laplace"
    run: Callable[..., dict] | None = None


def _entry_points():
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_problems() -> dict[str, str]:
    """``{name: description}`` of every registered problem."""
    out = {}
    for name, ep in sorted(_entry_points().items()):
        out[name] = ep.load().description
    return out


def load_problem(name: str) -> Problem:
    """The registered problem called ``name``."""
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none installed"
        raise ValueError(f"unknown problem {name!r} (available: {known})")
    problem = eps[name].load()
    if not isinstance(problem, Problem):
        raise TypeError(f"entry point {name!r} does not point to a jaxinv.Problem")
    return problem
