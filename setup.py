"""The compiled parts of consentgate: the hot loop of `verify`'s chain walk, and for
imports the parser of plain JSON Lines and the per-event loop of the chain's append.

Everything else is configured in pyproject.toml. Both extensions are optional: without
a C compiler or the headers of OpenSSL and SQLite the build goes on without them, and
`verify` walks the chain in Python (same results, about 3 x slower), imports run in
Python (about 2 x slower); `.ci/run` installs what they need so that CI always tests them.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "consentgate.ledger._chainwalk",
            ["src/consentgate/ledger/_chainwalk.c"],
            libraries=["crypto", "sqlite3"],
            # SHA256_Init & co. are deprecated in OpenSSL 3 in favour of EVP, whose
            # per-call context costs more than hashing these short messages.
            extra_compile_args=["-O2", "-Wno-deprecated-declarations"],
            depends=["src/consentgate/ledger/_cbase.h"],
            optional=True,
        ),
        Extension(
            "consentgate.ledger._append",
            ["src/consentgate/ledger/_append.c"],
            libraries=["crypto", "sqlite3", "dl"],
            extra_compile_args=["-O2", "-Wno-deprecated-declarations"],
            depends=["src/consentgate/ledger/_cbase.h"],
            optional=True,
        ),
        Extension(
            "consentgate.ledger._lineparse",
            ["src/consentgate/ledger/_lineparse.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wno-deprecated-declarations"],
            depends=["src/consentgate/ledger/_cbase.h"],
            optional=True,
        ),
    ]
)
