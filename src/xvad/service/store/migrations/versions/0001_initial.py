"""The first schema: cameras, alerts, users, API tokens and the delivery outbox.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cameras",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("settings_json", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("uid", sa.String(64), nullable=False, unique=True),
        sa.Column("camera", sa.String(64), nullable=False, index=True),
        sa.Column("started_at", UTC, nullable=False, index=True),
        sa.Column("ended_at", UTC),
        sa.Column("start_time", sa.Float, nullable=False),
        sa.Column("end_time", sa.Float),
        sa.Column("peak_score", sa.Float, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("windows", sa.Integer, nullable=False),
        sa.Column("class_name", sa.String(128)),
        sa.Column("class_index", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("end_reason", sa.String(64)),
        sa.Column("checkpoint_id", sa.String(128)),
        sa.Column("xvad_version", sa.String(32), nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("policy", sa.String(16), nullable=False),
        sa.Column("window", sa.Integer, nullable=False),
        sa.Column("stride", sa.Integer, nullable=False),
        sa.Column("fps", sa.Float, nullable=False),
        sa.Column("media_state", sa.String(16), nullable=False),
        sa.Column("media_dir", sa.Text),
        sa.Column("files_json", sa.Text, nullable=False),
        sa.Column("explanation_state", sa.String(16), nullable=False),
        sa.Column("explanation_error", sa.Text),
        sa.Column("model_version", sa.String(128)),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("cameras", sa.Text),
        sa.Column("password_hash", sa.Text),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("last_used_at", UTC),
        sa.Column("revoked", sa.Boolean, nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("topic", sa.Text),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_try_at", UTC, nullable=False, index=True),
        sa.Column("sent_at", UTC),
        sa.Column("error", sa.Text),
        sa.Column("claimed_by", sa.String(255)),
        sa.Column("claimed_until", UTC),
    )


def downgrade() -> None:
    for table in ("outbox", "api_tokens", "users", "alerts", "cameras"):
        op.drop_table(table)
