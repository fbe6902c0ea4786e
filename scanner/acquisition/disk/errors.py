"""Errors of the disk layers (all carry the path or volume that caused them)."""

from __future__ import annotations

from scanner.errors import SourceError, Unavailable


class DiskFormatError(SourceError):
    """The image, a volume or a filesystem is not what it claims to be (or too damaged to open)."""


class ReferenceRefused(DiskFormatError):
    """A file an image refers to (backing, parent, extent, data file) was not opened: outside the
    allowed directories, reached through a symlink, not a regular file, or missing. ``where`` is
    the reference as the image spells it; the reason never tells anything about a file outside."""


class TruncatedImage(OSError):
    """A read ran past the end of an image file: the image is truncated or a table points past it.

    An ``OSError`` so that parser code treating I/O failures as I/O failures keeps doing so.
    """


class CorruptData(OSError):
    """A table entry or compressed block met while reading is corrupt; an ``OSError`` so the
    walk reports it as a gap for what was being read, like a truncation."""


class MissingData(OSError):
    """A read reached a part of the disk that lives in a file that was not opened (see ``Chain.problems``)."""


def unavailable(package: str, error: ImportError) -> Unavailable:
    """The error for a parser package that is not installed."""
    return Unavailable(f"unavailable: install {package} ({error})")
