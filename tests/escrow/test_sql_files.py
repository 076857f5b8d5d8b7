"""escrow/sql/*.sql hold exactly the SQL functions and triggers the latest migration installs."""

from pathlib import Path

import pytest

from tests.conftest import requires_postgres
from tests.sql_files import file_definitions, installed_definitions

SQL_DIR = Path(__file__).resolve().parents[2] / "escrow" / "sql"


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db
def test_the_sql_files_are_what_the_latest_migration_installs():
    files = file_definitions(SQL_DIR)

    installed = installed_definitions("escrow_")

    assert files  # the files were found and read
    assert sorted(files) == sorted(installed)
    for name, text in files.items():
        assert text == installed[name], f"{name} differs from the migrated database"
