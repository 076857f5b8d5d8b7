"""Compare an app's `sql/*.sql` files with what the migrated test database holds.

The files are the readable copy of the SQL functions and triggers the migrations install: each
is the database's own text (pg_get_functiondef / pg_get_triggerdef) after the latest migration.
Migrations keep their own copies (an applied migration must replay unchanged), so this check
is what keeps the files and the newest migration saying the same thing."""

import re
from pathlib import Path

from django.db import connection

_FUNCTION = re.compile(r"CREATE OR REPLACE FUNCTION .*?AS \$function\$.*?\$function\$;", re.S)
_NAME = re.compile(r"(?:FUNCTION public\.|TRIGGER )(\w+)")


def _normalised(statement: str) -> str:
    return " ".join(statement.rstrip().rstrip(";").split())


def _by_name(statements) -> dict[str, str]:
    found = {}
    for statement in statements:
        text = _normalised(statement)
        kind = "function" if text.startswith("CREATE OR REPLACE FUNCTION") else "trigger"
        found[f"{kind} {_NAME.search(text).group(1)}"] = text
    return found


def file_definitions(directory: Path) -> dict[str, str]:
    """Every function and trigger the directory's .sql files define, by kind and name."""
    statements = []
    for path in sorted(directory.glob("*.sql")):
        text = path.read_text()
        statements += _FUNCTION.findall(text)
        rest = _FUNCTION.sub("", text)
        rest = "\n".join(line for line in rest.splitlines() if not line.startswith("--"))
        statements += [part for part in rest.split(";") if part.strip()]
    return _by_name(statements)


def installed_definitions(prefix: str) -> dict[str, str]:
    """The functions and triggers named `<prefix>*` in the database, as PostgreSQL prints them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_functiondef(p.oid) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' AND p.proname LIKE %s",
            [f"{prefix}%"],
        )
        functions = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE NOT tgisinternal AND tgname LIKE %s",
            [f"{prefix}%"],
        )
        triggers = [row[0] for row in cursor.fetchall()]
    return _by_name([*functions, *triggers])
