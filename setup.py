"""Builds the optional native core ``scanner._native`` (C, CPython API; see native/avscan_native.c).

Needs only gcc and the Python headers (Debian: build-essential, python3-dev); xxhash.h is vendored
in native/, so nothing is downloaded. ``optional=True``: when the compiler or headers are missing,
the install still succeeds and ``scanner.native`` falls back to pure Python (same results, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "scanner._native",
            sources=["native/avscan_native.c", "native/xxh_avx2.c", "native/xxh_avx512.c"],
            depends=["native/xxhash.h", "native/xxh_avx2.h"],
            include_dirs=["native"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wno-unused-function"],
            optional=True,
        )
    ]
)
