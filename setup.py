"""The compiled parts of consentgate: the hot loop of `verify`'s chain walk, and for
imports the parser of plain JSON Lines and the per-event loop of the chain's append.

Everything else is configured in pyproject.toml. The extensions are optional: without
a C compiler or the headers of OpenSSL and SQLite the build goes on without them, and
`verify` walks the chain in Python (same results, about 3 x slower), imports run in
Python (about 2 x slower); `.ci/run` installs what they need so that CI always tests them.
"""

from setuptools import Extension, setup


def ledger_extension(name: str, libraries: list[str]) -> Extension:
    return Extension(
        f"consentgate.ledger.{name}",
        [f"src/consentgate/ledger/{name}.c"],
        libraries=libraries,
        # SHA256_Init & co. are deprecated in OpenSSL 3 in favour of EVP, whose
        # per-call context costs more than hashing these short messages.
        extra_compile_args=["-O2", "-Wno-deprecated-declarations"],
        depends=["src/consentgate/ledger/_cbase.h"],
        optional=True,
    )


setup(
    ext_modules=[
        ledger_extension("_chainwalk", ["crypto", "sqlite3"]),
        ledger_extension("_append", ["crypto", "sqlite3", "dl"]),
        ledger_extension("_lineparse", ["crypto"]),
    ]
)
