from typing import Any

def parse_block(
    block: bytes,
    first_lineno: int,
    secret: bytes,
    purposes: frozenset[str],
    regions: frozenset[str],
    recorded_us: int,
    today: int,
    /,
) -> tuple[list[int], list[Any], list[int]]: ...
def contract() -> dict[str, Any]: ...
