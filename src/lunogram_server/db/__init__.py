"""Storage: the connection pool, the embedded PostgreSQL, migrations and named SQL queries."""

from lunogram_server.db.pool import open_pool
from lunogram_server.db.queries import fetch_scalar, load_queries

__all__ = ["fetch_scalar", "load_queries", "open_pool"]
