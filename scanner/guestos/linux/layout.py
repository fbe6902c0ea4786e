"""The struct layout a Linux walker needs, taken from BTF: field offsets, sizes, array lengths.

A :class:`Layout` is small and JSON-serialisable (it is what the profile cache stores). Fields
are named ``"<short struct>.<path>"``; optional ones (which differ between kernel versions, e.g.
``mm.mm_mt`` from 6.1, ``mm.mmap`` before it) are simply absent when the kernel lacks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scanner.guestos.btf import Btf, BtfError, Kind

STRUCTS = {
    "task": "task_struct",
    "cred": "cred",
    "mm": "mm_struct",
    "vma": "vm_area_struct",
    "file": "file",
    "dentry": "dentry",
    "module": "module",
    "mt": "maple_tree",
    "mr64": "maple_range_64",
    "ma64": "maple_arange_64",
    "mount": "mount",
}

REQUIRED = (
    "task.tasks",
    "task.pid",
    "task.tgid",
    "task.comm",
    "task.real_parent",
    "task.group_leader",
    "task.mm",
    "task.active_mm",
    "task.cred",
    "task.files",
    "cred.uid",
    "mm.pgd",
    "mm.arg_start",
    "mm.arg_end",
    "mm.exe_file",
    "mm.start_brk",
    "mm.brk",
    "mm.start_stack",
    "vma.vm_start",
    "vma.vm_end",
    "vma.vm_mm",
    "vma.vm_flags",
    "vma.vm_pgoff",
    "vma.vm_file",
    "file.f_path.dentry",
    "dentry.d_name.name",
    "dentry.d_name.len",
    "dentry.d_parent",
    "module.list",
    "module.name",
    "module.state",
)
OPTIONAL = (
    "file.f_path.mnt",
    "mount.mnt",
    "mount.mnt.mnt_root",
    "mount.mnt_parent",
    "mount.mnt_mountpoint",
    "mm.context.vdso",
    "task.exit_state",
    "task.nsproxy",
    "mm.mm_mt",
    "mm.mmap",
    "vma.vm_next",
    "mt.ma_root",
    "mr64.parent",
    "mr64.pivot",
    "mr64.slot",
    "ma64.parent",
    "ma64.pivot",
    "ma64.slot",
    "module.core_layout.base",
    "module.core_layout.size",
)
ARRAYS = ("mr64.pivot", "mr64.slot", "ma64.pivot", "ma64.slot", "task.comm", "module.name")


@dataclass(frozen=True)
class Layout:
    offsets: dict[str, int]
    counts: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> int:
        return self.offsets[name]

    def has(self, name: str) -> bool:
        return name in self.offsets

    def to_json(self) -> dict[str, dict[str, int]]:
        return {"offsets": self.offsets, "counts": self.counts, "sizes": self.sizes}

    @classmethod
    def from_json(cls, data: dict[str, dict[str, int]]) -> Layout:
        return cls(dict(data["offsets"]), dict(data["counts"]), dict(data["sizes"]))


def layout_from_btf(btf: Btf) -> Layout:
    """The walkers' layout; raises BtfError naming the first required field BTF does not have."""
    offsets: dict[str, int] = {}
    counts: dict[str, int] = {}
    for name in REQUIRED + OPTIONAL:
        short, path = name.split(".", 1)
        try:
            offsets[name] = btf.offset(STRUCTS[short], path)
        except BtfError:
            if name in REQUIRED:
                raise
            continue
        if name in ARRAYS:
            counts[name] = _count(btf, STRUCTS[short], path)
    sizes = {short: btf.sizeof(btf.find(full)) for short, full in STRUCTS.items() if (Kind.STRUCT, full) in btf.by_name}
    return Layout(offsets, counts, sizes)


def _count(btf: Btf, struct_name: str, path: str) -> int:
    type_id = btf.find(struct_name)
    for part in path.split("."):
        type_id = btf.member(type_id, part).type_id
    t = btf.get(btf.resolve(type_id))
    if t.kind is not Kind.ARRAY:
        raise BtfError(f"BTF: {struct_name}.{path} is not an array")
    return t.count
