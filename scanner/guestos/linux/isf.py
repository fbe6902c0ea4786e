"""A Volatility 3 symbol table (ISF JSON) from a profile: the cross-check with an independent tool.

Types come from the kernel's BTF (every struct, union and enum; anonymous members flattened into
their parent with absolute offsets; typedefs and qualifiers resolved). Symbols come from the
kernel anchor (no kallsyms): ``init_task``, ``init_files`` (``init_task.files``), ``init_mm``,
``init_top_pgt``/``swapper_pg_dir`` (the page-table root found in the image) and ``linux_banner``
(with its bytes, which Volatility matches against memory). Addresses are **unrelocated**: runtime
address minus the KASLR slide, as in a vmlinux linked at ``0xffffffff81000000``.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

from scanner.guestos.btf import INT_BOOL, INT_CHAR, INT_SIGNED, Btf, Kind
from scanner.guestos.linux.kernel import LinuxKernel
from scanner.guestos.linux.locate import read_physical
from scanner.guestos.linux.modules import module_list
from scanner.guestos.linux.profile import Profile

Json = dict[str, Any]
ISF_FORMAT = "6.2.0"


def isf(profile: Profile, kernel: LinuxKernel) -> Json:
    """The ISF document for ``profile`` with symbols located in ``kernel``."""
    btf = profile.btf()
    writer = _TypeWriter(btf)
    for i, t in enumerate(btf.types):
        if t.kind in (Kind.STRUCT, Kind.UNION) and t.name:
            writer.user_type(i)
        elif t.kind in (Kind.ENUM, Kind.ENUM64) and t.name:
            writer.enum(i)
    writer.drain()
    return {
        "metadata": {
            "format": ISF_FORMAT,
            "producer": {"name": "avscan", "version": "0.1.0"},
            "linux": {"symbols": [{"kind": "btf", "name": f"btf-{profile.key}", "hash_type": "none"}]},
        },
        "base_types": writer.base_types,
        "user_types": writer.user_types,
        "enums": writer.enums,
        "symbols": _symbols(profile, kernel),
    }


def write_isf(profile: Profile, kernel: LinuxKernel, directory: Path) -> Path:
    """Write the ISF as ``<directory>/linux/avscan-<key>.json`` (``vol -s <directory>``)."""
    path = directory / "linux" / f"avscan-{profile.key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(isf(profile, kernel)))
    return path


def _symbols(profile: Profile, kernel: LinuxKernel) -> Json:
    a = kernel.anchor
    kmem = kernel.kmem
    shift = a.virtual_shift
    layout = profile.layout
    top_pgt = a.dtb - a.text_phys + a.text
    files = kmem.u64(a.init_task + layout["task.files"])
    init_mm = _find_init_mm(kernel, top_pgt) or a.active_mm
    banner = profile.banner.encode() + b"\n\0"
    out: Json = {
        "init_task": {"address": a.init_task - shift, "type": {"kind": "struct", "name": "task_struct"}},
        "init_files": {"address": files - shift},
        "init_mm": {"address": init_mm - shift, "type": {"kind": "struct", "name": "mm_struct"}},
        "init_top_pgt": {"address": top_pgt - shift},
        "swapper_pg_dir": {"address": top_pgt - shift},
        "_text": {"address": a.text - shift},
    }
    at = _banner_address(kernel, banner)
    if at:
        out["linux_banner"] = {"address": at - shift, "constant_data": base64.b64encode(banner).decode()}
    head = module_list(kernel).head  # the `modules` list head (known only when a module is loaded)
    if head:
        out["modules"] = {"address": head - shift, "type": {"kind": "struct", "name": "list_head"}}
    return out


IMAGE_SCAN = 96 << 20


def _image(kernel: LinuxKernel) -> bytes:
    a = kernel.anchor
    length = IMAGE_SCAN
    while length > 0:
        try:
            return read_physical(kernel.source, a.text_phys, length)
        except Exception:
            length //= 2
    return b""


def _banner_address(kernel: LinuxKernel, banner: bytes) -> int:
    at = _image(kernel).find(banner)
    return kernel.anchor.text + at if at >= 0 else 0


def _find_init_mm(kernel: LinuxKernel, top_pgt: int) -> int:
    """``init_mm``: the mm_struct in the image whose ``pgd`` is ``init_top_pgt``."""
    data = _image(kernel)
    needle = struct.pack("<Q", top_pgt)
    pgd_off = kernel.layout["mm.pgd"]
    at = data.find(needle)
    while at >= 0:
        if at % 8 == 0 and at >= pgd_off:
            return kernel.anchor.text + at - pgd_off
        at = data.find(needle, at + 1)
    return 0


class _TypeWriter:
    def __init__(self, btf: Btf) -> None:
        self.btf = btf
        self.base_types: Json = {
            "void": {"kind": "void", "size": 0, "signed": False, "endian": "little"},
            "pointer": {"kind": "int", "size": 8, "signed": False, "endian": "little"},
        }
        self.user_types: Json = {}
        self.enums: Json = {}
        self._names: dict[int, str] = {}
        self._todo: list[int] = []

    def name(self, type_id: int) -> str:
        if type_id not in self._names:
            t = self.btf.get(type_id)
            self._names[type_id] = t.name or f"unnamed_{type_id}"
        return self._names[type_id]

    def drain(self) -> None:
        while self._todo:
            self.user_type(self._todo.pop())

    def user_type(self, type_id: int) -> None:
        t = self.btf.get(type_id)
        name = self.name(type_id)
        if name in self.user_types:
            return
        fields: Json = {}
        kind = "union" if t.kind is Kind.UNION else "struct"
        self.user_types[name] = {"kind": kind, "size": t.size, "fields": fields}
        for m in self.btf.members(type_id):
            if m.name in fields:
                continue
            desc = self.ref(m.type_id)
            if m.bit_size:
                fields[m.name] = {
                    "offset": m.bit_offset // 8,
                    "type": {
                        "kind": "bitfield",
                        "bit_position": m.bit_offset % 8,
                        "bit_length": m.bit_size,
                        "type": desc,
                    },
                }
            else:
                fields[m.name] = {"offset": m.bit_offset // 8, "type": desc}

    def enum(self, type_id: int) -> str:
        t = self.btf.get(type_id)
        name = self.name(type_id)
        if name not in self.enums:
            signed = any(v < 0 for _, v in t.enumerators)
            base = self._int_base(t.size, signed)
            self.enums[name] = {"size": t.size, "base": base, "constants": dict(t.enumerators)}
        return name

    def _int_base(self, size: int, signed: bool) -> str:
        name = {1: "char", 2: "short", 4: "int", 8: "long long"}.get(size, "int")
        if not signed:
            name = "unsigned " + name
        self.base_types.setdefault(name, {"kind": "int", "size": size, "signed": signed, "endian": "little"})
        return name

    def ref(self, type_id: int, depth: int = 0) -> Json:  # noqa: PLR0911, PLR0912 - one branch per BTF kind
        if depth > 32:
            return {"kind": "base", "name": "void"}
        type_id = self.btf.resolve(type_id)
        t = self.btf.get(type_id)
        if t.kind is Kind.VOID:
            return {"kind": "base", "name": "void"}
        if t.kind is Kind.INT:
            kind = "bool" if t.encoding & INT_BOOL else "char" if t.encoding & INT_CHAR or t.name == "char" else "int"
            self.base_types.setdefault(
                t.name, {"kind": kind, "size": t.size, "signed": bool(t.encoding & INT_SIGNED), "endian": "little"}
            )
            return {"kind": "base", "name": t.name}
        if t.kind is Kind.FLOAT:
            self.base_types.setdefault(t.name, {"kind": "float", "size": t.size, "signed": True, "endian": "little"})
            return {"kind": "base", "name": t.name}
        if t.kind is Kind.PTR:
            target = self.btf.get(self.btf.resolve(t.ref))
            if target.kind is Kind.FUNC_PROTO:
                return {"kind": "pointer", "subtype": {"kind": "function"}}
            return {"kind": "pointer", "subtype": self.ref(t.ref, depth + 1)}
        if t.kind is Kind.ARRAY:
            return {"kind": "array", "count": t.count, "subtype": self.ref(t.elem, depth + 1)}
        if t.kind in (Kind.STRUCT, Kind.UNION):
            name = self.name(type_id)
            if name not in self.user_types:
                self._todo.append(type_id)
            return {"kind": "union" if t.kind is Kind.UNION else "struct", "name": name}
        if t.kind in (Kind.ENUM, Kind.ENUM64):
            return {"kind": "enum", "name": self.enum(type_id)}
        if t.kind is Kind.FWD:
            name = t.name or f"unnamed_{type_id}"
            full = self.btf.by_name.get((Kind.UNION if t.fwd_union else Kind.STRUCT, name))
            if full is not None:
                return self.ref(full, depth + 1)
            self.user_types.setdefault(name, {"kind": "struct", "size": 0, "fields": {}})
            return {"kind": "struct", "name": name}
        if t.kind is Kind.FUNC_PROTO:
            return {"kind": "function"}
        return {"kind": "base", "name": "void"}
