"""The Alembic environment, configured in code by :func:`xvad.service.store.upgrade.migrate` (no alembic.ini):
it runs the migrations on the connection handed over in ``config.attributes["connection"]``."""
from __future__ import annotations

from alembic import context

from xvad.service.store.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")   # SQLite alters tables by copying
with context.begin_transaction():
    context.run_migrations()
