"""Which PostgreSQL to use: DATABASE_URL's, or the embedded one in the data directory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lunogram_server.config import Settings
from lunogram_server.db.embedded import EmbeddedPostgres
from lunogram_server.db.migrate import migrate


@contextmanager
def database(settings: Settings, *, stop_embedded: bool = True) -> Iterator[str]:
    """Yield a migrated database's conninfo.

    Embedded mode starts PostgreSQL when it is not running (or adopts the one a killed server left behind)
    and, when `stop_embedded`, stops it again on the way out if this call was the one that started it.
    """
    if settings.database_url:
        migrate(settings.database_url)
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.pg_dir)
    conninfo, started = embedded.start()
    try:
        migrate(conninfo)
        yield conninfo
    finally:
        if started and stop_embedded:
            embedded.stop()
