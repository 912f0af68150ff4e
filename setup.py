"""The one compiled part of consentgate: the hot loop of `verify`'s chain walk.

Everything else is configured in pyproject.toml. The extension is optional: without a
C compiler or the headers of OpenSSL and SQLite the build goes on without it, and `verify` walks the
chain in Python (same results, about 3 x slower); `.ci/run` installs what it needs
so that CI always tests it.
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
            optional=True,
        )
    ]
)
