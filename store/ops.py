"""The row writer's operations (Upsert, Replace, Delete) and their plan as few statements.

:func:`plan` turns a batch of ops into statements, merging those of one shape into one
executemany where foreign keys and cascades allow it; :mod:`aretriever.store.bulk` runs them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .models import Base

Row = Mapping[str, Any]


def _where_required(where: Mapping[str, Any]) -> None:
    if not where:
        raise ValueError("an empty `where` would touch every row; name the rows to change")


@dataclass(frozen=True, slots=True)
class Upsert:
    """INSERT rows; on a conflict on ``keys`` (a unique constraint), update instead.

    ``update=None`` updates every non-key column given in the rows, ``update=()`` keeps the stored
    row (DO NOTHING). Columns in ``add`` are added to the stored value (counters such as
    ``Failure.attempts``). An update also stamps ``updated_at``/``last_at`` when the table has them.
    """

    model: type[Base]
    rows: Sequence[Row]
    keys: tuple[str, ...]
    update: tuple[str, ...] | None = None
    add: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("an upsert needs the columns of a unique constraint as `keys`")


@dataclass(frozen=True, slots=True)
class Replace:
    """DELETE the rows where every column of ``where`` equals its value, then INSERT ``rows``."""

    model: type[Base]
    where: Mapping[str, Any]
    rows: Sequence[Row] = ()

    def __post_init__(self) -> None:
        _where_required(self.where)


@dataclass(frozen=True, slots=True)
class Delete:
    """DELETE the rows where every column of ``where`` equals its value."""

    model: type[Base]
    where: Mapping[str, Any]

    def __post_init__(self) -> None:
        _where_required(self.where)


Op = Upsert | Replace | Delete


def model_table(model: type[Base]) -> sa.Table:
    """Return the table of a model."""
    table = model.__table__
    if not isinstance(table, sa.Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


def op_rows(op: Op) -> int:
    """Rows an op writes, for batch sizes (a delete counts as one)."""
    return 1 if isinstance(op, Delete) else max(len(op.rows), 1)


@dataclass(slots=True)
class Step:
    """One statement of a batch: ``kind`` is "upsert", "insert" or "delete".

    ``rows`` are the rows to write, or for a delete the ``where`` mappings (one per op).
    """

    kind: str
    op: Op
    columns: tuple[str, ...] = ()
    rows: list[Row] = field(default_factory=list)
    # rows' values of some columns, to tell fast whether a delete may hit any of them
    _index: dict[tuple[str, ...], set[tuple[Any, ...]] | None] = field(default_factory=dict, repr=False)

    @property
    def table(self) -> sa.Table:
        """The table the statement writes."""
        return model_table(self.op.model)

    def shape(self) -> tuple[Any, ...]:
        """Steps of equal shape share one compiled statement and can run as one executemany."""
        op = self.op
        if isinstance(op, Upsert):
            return (self.kind, op.model, op.keys, op.update, op.add, self.columns)
        if isinstance(op, (Replace, Delete)) and self.kind == "delete":
            return (self.kind, op.model, tuple(op.where), self.columns)
        return (self.kind, op.model, self.columns)

    def extend(self, rows: Sequence[Row]) -> None:
        """Add rows (of a merged step)."""
        self.rows.extend(rows)
        for keys, index in self._index.items():
            if index is not None:
                self._index[keys] = _index_rows(keys, rows, index)

    def may_match(self, where: Mapping[str, Any]) -> bool:
        """Return True unless no row can match ``where`` (a row lacking a column may match)."""
        keys = tuple(where)
        if keys not in self._index:
            self._index[keys] = _index_rows(keys, self.rows, set())
        index = self._index[keys]
        if index is None:  # rows that cannot be indexed: a linear scan, rare in practice
            return any(_may_match(row, where) for row in self.rows)
        return tuple(where.values()) in index


def _index_rows(
    keys: tuple[str, ...], rows: Sequence[Row], index: set[tuple[Any, ...]]
) -> set[tuple[Any, ...]] | None:
    try:
        index.update(tuple(row[k] for k in keys) for row in rows)
    except (KeyError, TypeError):  # a missing column, or an unhashable value: compare row by row
        return None
    return index


def _row_steps(kind: str, op: Op, rows: Sequence[Row]) -> list[Step]:
    steps: list[Step] = []
    for row in rows:
        # one statement per column set: an executemany binds the same parameters for every row,
        # and a column left out must keep its stored value (or default), not become NULL
        columns = tuple(sorted(row))
        if steps and steps[-1].columns == columns:
            steps[-1].rows.append(row)
        else:
            steps.append(Step(kind, op, columns, [row]))
    return steps


def _op_steps(op: Op) -> list[Step]:
    if isinstance(op, Upsert):
        return _row_steps("upsert", op, op.rows)
    # the columns compared with NULL are part of the statement (IS NULL), not parameters
    nulls = tuple(sorted(k for k, v in op.where.items() if v is None))
    steps = [Step("delete", op, nulls, [op.where])]
    if isinstance(op, Replace):
        steps += _row_steps("insert", op, op.rows)
    return steps


@functools.cache  # the schema never changes in a process: walk the foreign keys once per table
def _descendants(table: sa.Table) -> frozenset[sa.Table]:
    """Tables whose rows refer, directly or not, to rows of ``table`` (cascades reach them)."""
    found: set[sa.Table] = set()
    todo = [table]
    while todo:
        parent = todo.pop()
        for child in table.metadata.tables.values():
            if child is not table and child not in found and _refers(child, parent):
                found.add(child)
                todo.append(child)
    return frozenset(found)


def _refers(child: sa.Table, parent: sa.Table) -> bool:
    return any(fk.references(parent) for fk in child.foreign_keys)


def _may_match(row: Row, where: Mapping[str, Any]) -> bool:
    return all(k not in row or row[k] == v for k, v in where.items())


def _same_table_commutes(a: Step, b: Step) -> bool:
    if a.kind == "delete" and b.kind == "delete":
        return True
    if a.kind == "insert" and b.kind == "delete":  # plain inserts none of which the delete hits
        return not any(a.may_match(where) for where in b.rows)
    return False  # upserts may meet stored rows a delete would have removed: keep the order


def commutes(a: Step, b: Step) -> bool:
    """Return True if ``b``, which comes after ``a``, may run before it with the same result.

    Writes never move before writes or deletes of their parent tables (foreign keys, cascades),
    deletes never move before writes into tables they cascade to, and statements on one table
    keep their order unless they are deletes, or a delete that matches none of an insert's rows.
    """
    if a.table is b.table:
        return _same_table_commutes(a, b)
    if b.kind == "delete":
        return a.kind == "delete" or a.table not in _descendants(b.table)
    return b.table not in _descendants(a.table)


def plan(ops: Sequence[Op]) -> list[Step]:
    """Turn ops into statements, merging statements of the same shape where the order allows.

    A statement joins the latest earlier statement of its shape (one executemany) if it commutes
    with every statement in between (:func:`commutes`), so interleaved ops such as
    (source, raw, lightcurves) x N become three or four statements instead of 3-4 N.
    """
    steps: list[Step] = []
    for op in ops:
        for step in _op_steps(op):
            _place(steps, step)
    return steps


def _place(steps: list[Step], step: Step) -> None:
    shape = step.shape()
    # newest first: the first statement that does not commute is a barrier, and nothing older
    # may be joined past it (that would reorder the two)
    for earlier in reversed(steps):
        if earlier.shape() == shape:
            earlier.extend(step.rows)
            return
        if not commutes(earlier, step):
            break
    steps.append(step)
