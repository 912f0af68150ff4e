"""Types of the compiled append loop (_append.c); see chain.Appender.append."""

from typing import Any

def append_rows(
    rows: list[tuple[Any, ...]],
    keys: dict[int, bytes | None],
    size: int,
    prev: bytes,
    frontier: list[bytes],
    hashing: bool,
    create: bool = False,
    /,
) -> tuple[list[tuple[Any, ...]], bytes, dict[int, int], list[tuple[Any, ...]]]: ...
def append_sqlite(
    connection: Any,
    connection_type: type,
    module_file: str,
    path: str,
    sql: str,
    rows: list[tuple[Any, ...]],
    keys: dict[int, bytes | None],
    size: int,
    prev: bytes,
    frontier: list[bytes],
    hashing: bool,
    create: bool = False,
    /,
) -> tuple[int, bytes, dict[int, int], list[tuple[Any, ...]]] | None: ...
