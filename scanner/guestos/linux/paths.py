"""Path names of files from their dentries (``file -> f_path.dentry -> d_name``, up ``d_parent``).

As the kernel's ``d_path`` does, the walk crosses mount points: at the root of a mount it goes on
from the mount point (``mnt_mountpoint``) in the parent mount (``mnt_parent``), so a file on
``/run`` (a tmpfs) reads ``/run/...``. A profile without the ``mount`` fields gives the name
relative to the file's mount. Bounded by ``max_depth`` steps in all.
"""

from __future__ import annotations

from scanner.guestos.linux.layout import Layout
from scanner.guestos.linux.memory import VirtualMemory
from scanner.guestos.problems import WalkError

MAX_NAME = 255
MAX_REMEMBERED = 65536  # paths remembered per address space (dentry walks are the cost of a VMA walk)


def dentry_name(kmem: VirtualMemory, layout: Layout, dentry: int) -> str:
    length = kmem.u32(dentry + layout["dentry.d_name.len"])
    if length > MAX_NAME:
        raise WalkError(f"dentry name of {length} bytes", dentry)
    name = kmem.pointer(dentry + layout["dentry.d_name.name"], "d_name.name")
    return kmem.read(name, length).decode("utf-8", "replace")


def dentry_path(kmem: VirtualMemory, layout: Layout, dentry: int, max_depth: int = 64, vfsmount: int = 0) -> str:
    """The path of ``dentry``, from the root of all mounts when ``vfsmount`` (its mount) is known."""
    parts: list[str] = []
    mount = vfsmount - layout["mount.mnt"] if vfsmount else 0
    for _ in range(max_depth):
        parent = kmem.pointer(dentry + layout["dentry.d_parent"], "d_parent")
        if mount and (parent == dentry or dentry == kmem.u64(mount + layout["mount.mnt.mnt_root"])):
            up = kmem.pointer(mount + layout["mount.mnt_parent"], "mnt_parent")
            if up == mount:
                return "/" + "/".join(reversed(parts))
            dentry = kmem.pointer(mount + layout["mount.mnt_mountpoint"], "mnt_mountpoint")
            mount = up
            continue
        if parent == dentry:
            return "/" + "/".join(reversed(parts))
        parts.append(dentry_name(kmem, layout, dentry))
        dentry = parent
    raise WalkError(f"path deeper than {max_depth} components", dentry)


MOUNT_FIELDS = ("file.f_path.mnt", "mount.mnt", "mount.mnt.mnt_root", "mount.mnt_parent", "mount.mnt_mountpoint")


def file_path(kmem: VirtualMemory, layout: Layout, file: int, max_depth: int = 64) -> str:
    """The path of ``struct file *file`` ("" for a NULL file)."""
    if not file:
        return ""
    dentry = kmem.pointer(file + layout["file.f_path.dentry"], "f_path.dentry")
    mounts = all(layout.has(f) for f in MOUNT_FIELDS)
    vfsmount = kmem.pointer(file + layout["file.f_path.mnt"], "f_path.mnt") if mounts else 0
    key = (dentry, vfsmount)  # every process mapping a library names the same dentry: walk it once
    path = kmem.paths.get(key)
    if path is None:
        path = dentry_path(kmem, layout, dentry, max_depth, vfsmount)
        if len(kmem.paths) >= MAX_REMEMBERED:
            kmem.paths.clear()
        kmem.paths[key] = path
    return path
