"""Upgrades: which schema migrations a starting server applies by itself.

`store.migrate` decides. The default, `embedded`, migrates the SQLite file
at every start (one process owns it), and creates the schema of an empty
PostgreSQL database, but refuses to start on a PostgreSQL database whose
schema is behind: several replicas may share it, and an older replica still
running must not find its tables changed under it. The person upgrading
runs `tenure db migrate` once, then restarts the replicas with the new
version. `always` migrates whatever the store; `never` refuses any database
that is not current, even an empty one.
"""

from __future__ import annotations

from tenure.settings import Settings
from tenure.store.base import Store
from tenure.store.migrate import SchemaOutdated


async def open_for_serving(settings: Settings) -> Store:
    """Open the store a server runs on, migrating only what `store.migrate` allows.

    Raises `SchemaOutdated` (its message names `tenure db migrate`) for a
    database that needs migrations this start may not apply, and
    `SchemaTooNew` for one newer than this code.
    """
    from tenure.server import open_store, sqlite_path

    url = settings.database_url
    mode = str(settings["store.migrate"])
    embedded = sqlite_path(url) is not None
    if mode == "always" or (mode == "embedded" and embedded):
        return await open_store(url, migrate=True)
    try:
        return await open_store(url, migrate=False)
    except SchemaOutdated as outdated:
        if mode == "embedded" and outdated.details.get("database_version") == 0:
            # A new, empty database: creating its schema upgrades nothing.
            return await open_store(url, migrate=True)
        raise


__all__ = ["open_for_serving"]
