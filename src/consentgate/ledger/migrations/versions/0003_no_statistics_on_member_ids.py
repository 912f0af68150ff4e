"""PostgreSQL: no planner statistics on member ids and keys.

ANALYZE (and autovacuum) copy sampled column values into pg_statistic, where erasure
cannot reach them; an erased member id or key must not survive there.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE subjects ALTER COLUMN subject SET STATISTICS 0")
    op.execute("ALTER TABLE subjects ALTER COLUMN key SET STATISTICS 0")
    op.execute("ANALYZE subjects")  # drops what an earlier ANALYZE sampled


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE subjects ALTER COLUMN subject SET STATISTICS -1")
    op.execute("ALTER TABLE subjects ALTER COLUMN key SET STATISTICS -1")
