"""Multi-row statements without the ORM's per-row work: one UPDATE for many rows of a model
(update_rows), and VALUES lists in chunks for hand-written INSERTs and UPDATEs (values_chunks).

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


def values_chunks(rows: list, width: int, size: int = 500):
    """(flat parameters, VALUES placeholders) for up to `size` rows of `width` values at a
    time: 500 rows of seven is 3,500 parameters a statement, well under SQLite's 32,766."""
    row = "(" + ", ".join(["%s"] * width) + ")"
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        yield [value for item in chunk for value in item], ", ".join([row] * len(chunk))
