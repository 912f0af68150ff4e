"""Types of the compiled chain walk (_chainwalk.c); see walk.walk."""

from typing import Any

def encode(row: tuple[Any, ...], secret: bytes, /) -> bytes | None: ...
def keyed_many(secret: bytes, messages: list[bytes], /) -> list[bytes]: ...
def walk_file(
    path: str,
    sql: str,
    start: int,
    end: int,
    secret: bytes,
    keys: dict[int, Any],
    erased_marker: object,
    erased: set[int],
    prev: bytes | None,
    sizes: set[int],
    chunk: int,
    /,
) -> tuple[
    int,
    int | None,
    bytes | None,
    bytes | None,
    int,
    list[bytes],
    list[bytes],
    dict[int, tuple[int, bytes]],
    bool,
]: ...
