"""Each camera's adopted model versions (``xvad adapt``), at most one active per camera.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "camera_models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("camera", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("checkpoint_id", sa.String(128), nullable=False),
        sa.Column("threshold", sa.Float),
        sa.Column("base_checkpoint_id", sa.String(128)),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("metrics_json", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("previous_version", sa.Integer, nullable=False),
        sa.UniqueConstraint("camera", "version", name="uq_camera_models_camera_version"),
    )
    op.create_index("ix_camera_models_one_active", "camera_models", ["camera"], unique=True,
                    sqlite_where=sa.text("active"), postgresql_where=sa.text("active"))


def downgrade() -> None:
    op.drop_index("ix_camera_models_one_active", table_name="camera_models")
    op.drop_table("camera_models")
