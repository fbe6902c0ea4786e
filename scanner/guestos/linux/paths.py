"""Path names of files from their dentries (``file -> f_path.dentry -> d_name``, up ``d_parent``).

Bounded by ``max_depth``; the name is relative to the file's mount (mount points are not
crossed), which is the whole path for the root filesystem.
"""

from __future__ import annotations

from scanner.guestos.linux.layout import Layout
from scanner.guestos.linux.memory import VirtualMemory
from scanner.guestos.problems import WalkError

MAX_NAME = 255


def dentry_name(kmem: VirtualMemory, layout: Layout, dentry: int) -> str:
    length = kmem.u32(dentry + layout["dentry.d_name.len"])
    if length > MAX_NAME:
        raise WalkError(f"dentry name of {length} bytes", dentry)
    name = kmem.pointer(dentry + layout["dentry.d_name.name"], "d_name.name")
    return kmem.read(name, length).decode("utf-8", "replace")


def dentry_path(kmem: VirtualMemory, layout: Layout, dentry: int, max_depth: int = 64) -> str:
    parts: list[str] = []
    for _ in range(max_depth):
        parent = kmem.pointer(dentry + layout["dentry.d_parent"], "d_parent")
        if parent == dentry:
            return "/" + "/".join(reversed(parts))
        parts.append(dentry_name(kmem, layout, dentry))
        dentry = parent
    raise WalkError(f"path deeper than {max_depth} components", dentry)


def file_path(kmem: VirtualMemory, layout: Layout, file: int, max_depth: int = 64) -> str:
    """The path of ``struct file *file`` ("" for a NULL file)."""
    if not file:
        return ""
    dentry = kmem.pointer(file + layout["file.f_path.dentry"], "f_path.dentry")
    return dentry_path(kmem, layout, dentry, max_depth)
