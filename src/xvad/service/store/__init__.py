"""The service's storage: the tables (:mod:`.schema`), their migrations (:mod:`.upgrade`) and the
queries the service runs (:class:`.database.Database`). SQLite in WAL mode by default, PostgreSQL
(psycopg 3) with a URL; the database is the source of truth for every alert."""
from .database import Database, migrate, redact

__all__ = ["Database", "migrate", "redact"]
