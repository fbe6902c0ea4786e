"""Builds the optional native core ``scanner._native`` (C, CPython API; see native/avscan_native.c).

Needs gcc, the Python headers and xxhash.h from Debian's libxxhash-dev (the header-only XXH3
implementation, used inline; .ci/setup installs it), so nothing is downloaded or vendored. ``optional=True``: when the compiler or headers are missing,
the install still succeeds and ``scanner.native`` falls back to pure Python (same results, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "scanner._native",
            sources=["native/avscan_native.c", "native/xxh_avx2.c", "native/xxh_avx512.c"],
            depends=["native/xxh_avx2.h"],
            include_dirs=["native"],  # xxhash.h itself comes from the system (libxxhash-dev)
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wno-unused-function"],
            optional=True,
        )
    ]
)
