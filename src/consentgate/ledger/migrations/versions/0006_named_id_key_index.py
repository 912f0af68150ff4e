"""The uniqueness of `events.id_key` becomes a named index (`ux_events_id_key`)
instead of a table constraint.

SQLite cannot drop the index behind a UNIQUE constraint; a named unique index it can.
A bulk import into an empty ledger drops the two secondary indexes of `events` and
builds them once at the end, in its own transaction (chain.Appender, docs/formats.md).
On SQLite the table is rebuilt (its rows copied as they are: the chain does not
depend on the table's layout); on PostgreSQL the constraint is replaced.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = (
    "seq INTEGER NOT NULL PRIMARY KEY, id_key BIGINT NOT NULL, "
    "event_id VARCHAR(256) NOT NULL, content_sha256 VARCHAR(64) NOT NULL, "
    "type VARCHAR(16) NOT NULL, subject BIGINT NOT NULL, at_us BIGINT NOT NULL, "
    "purpose VARCHAR(256), choice VARCHAR(16), signal VARCHAR(16), source VARCHAR(256), "
    "notice_version VARCHAR(256), region VARCHAR(16), birth_date VARCHAR(10), sealed BLOB, "
    "recorded_us BIGINT NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL"
)


_NAMES = [column.split(" ")[0] for column in _COLUMNS.split(", ")]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Named by PostgreSQL when 0002 made the table (events_id_key_key, or with a
        # digit after it when the version-1 table still held that name).
        for unique in sa.inspect(bind).get_unique_constraints("events"):
            if unique["column_names"] == ["id_key"] and unique["name"]:
                op.drop_constraint(unique["name"], "events", type_="unique")
    else:
        op.execute(f"CREATE TABLE events_0006 ({_COLUMNS})")
        names = ", ".join(_NAMES)
        op.execute(f"INSERT INTO events_0006 ({names}) SELECT {names} FROM events ORDER BY seq")
        op.execute("DROP TABLE events")  # its indexes go with it
        op.execute("ALTER TABLE events_0006 RENAME TO events")
        op.create_index("ix_events_subject_at", "events", ["subject", "at_us"])
    op.create_index("ux_events_id_key", "events", ["id_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_events_id_key", table_name="events")
    with op.batch_alter_table("events") as batch:  # SQLite: the table is rebuilt
        batch.create_unique_constraint("events_id_key_key", ["id_key"])
