"""Multi-row statements without the ORM's per-row work: one UPDATE for many rows of a model
(update_rows), many rows' field saves collected and flushed as such UPDATEs (Saves), and VALUES
lists in chunks for hand-written INSERTs and UPDATEs (values_chunks).

`QuerySet.bulk_update` builds a `Case(When(pk=…))` expression per row and field and resolves
each; for a worker updating a batch of a hundred rows that was half its CPU
(docs/PERFORMANCE.md). Most fields of such a batch are set to one value for every row, so they
go in as plain assignments, and only the fields that differ row by row get a CASE."""

from __future__ import annotations

from django.db import connection


def update_rows(model, *, same: dict, per_row: dict[int, dict]) -> int:
    """UPDATE the rows whose ids are the keys of `per_row`: each field of `same` to its value,
    each field of a row's dict to that row's value (every row names the same fields). Values
    go through the fields' own conversion to database values, as the ORM would. Returns the
    number of rows updated."""
    if not per_row:
        return 0
    quote = connection.ops.quote_name
    meta = model._meta
    pk = quote(meta.pk.column)
    sets, params = [], []
    for name, value in same.items():
        field = meta.get_field(name)
        sets.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    ids = list(per_row)
    for name in per_row[ids[0]]:
        field = meta.get_field(name)
        column = quote(field.column)
        sets.append(f"{column} = CASE {pk} " + "WHEN %s THEN %s " * len(ids) + f"ELSE {column} END")
        for row_id in ids:
            params += [row_id, field.get_db_prep_save(per_row[row_id][name], connection)]
    params += ids
    # Only our own table and column names are interpolated; every value is a parameter.
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {', '.join(sets)} "  # noqa: S608
        f"WHERE {pk} IN ({', '.join(['%s'] * len(ids))})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


class Saves:
    """Field saves of many rows, collected while a batch runs the same per-row actions as the
    one-by-one path, and written at the end with one `update_rows` per model and set of
    fields (a field with one value for every row goes in as a plain assignment).

    Use: pass it to what would save (common.transitions.transition, or `save`), then `flush()`
    once, inside the same transaction. Values are read from the objects when flushing, so a
    row changed twice is written once with its last values."""

    def __init__(self) -> None:
        self._rows: dict[type, dict[int, tuple[object, set[str]]]] = {}

    def add(self, obj, fields) -> None:
        rows = self._rows.setdefault(type(obj), {})
        _obj, pending = rows.setdefault(obj.pk, (obj, set()))
        assert _obj is obj, "one object per row in a batch"
        pending.update(fields)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows.values())

    def flush(self) -> int:
        """Write everything collected; returns the number of rows updated."""
        updated = 0
        for model, rows in self._rows.items():
            groups: dict[frozenset, list] = {}
            for obj, fields in rows.values():
                groups.setdefault(frozenset(fields), []).append(obj)
            for fields, objects in groups.items():
                same, varying = {}, []
                attnames = {name: model._meta.get_field(name).attname for name in fields}
                for name in sorted(fields):
                    values = [getattr(obj, attnames[name]) for obj in objects]
                    if all(value == values[0] for value in values):
                        same[name] = values[0]
                    else:
                        varying.append(name)
                per_row = {
                    obj.pk: {name: getattr(obj, attnames[name]) for name in varying}
                    for obj in objects
                }
                updated += update_rows(model, same=same, per_row=per_row)
        self._rows = {}
        return updated


def save(obj, fields, saves: Saves | None = None) -> None:
    """Save `fields` of `obj` now, or collect them in `saves` for its flush."""
    if saves is not None:
        saves.add(obj, fields)
    else:
        obj.save(update_fields=sorted(set(fields)))


def values_chunks(rows: list, width: int, size: int = 500):
    """(flat parameters, VALUES placeholders) for up to `size` rows of `width` values at a
    time: 500 rows of seven is 3,500 parameters a statement, well under SQLite's 32,766."""
    row = "(" + ", ".join(["%s"] * width) + ")"
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        yield [value for item in chunk for value in item], ", ".join([row] * len(chunk))
