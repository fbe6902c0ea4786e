"""A Volatility 3 plugin for the hostile-guest tests: where a process's maple tree root and page
table are, found with Volatility's own task list, types and address translation.

For each task with ``--pid``: the physical address of ``mm->mm_mt.ma_root`` and the word stored
there, the physical addresses of pivot 0 and slot 0 of the node that word points to
(``maple_range_64.pivot`` and ``.slot``),
and the process's page-table base (the DTB of Volatility's own process layer). The tests corrupt
a dump at these physical addresses, so the walker under test does not choose what it is tested on.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from volatility3.framework import interfaces, renderers
from volatility3.framework.configuration import requirements
from volatility3.plugins.linux import pslist

NODE_MASK = ~0xFF  # the low byte of a maple node pointer holds its type and flags


class MmPlacement(interfaces.plugins.PluginInterface):
    """Physical addresses of a process's maple tree root, its first slot and its page table."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls) -> list[Any]:
        return [
            requirements.ModuleRequirement(name="kernel", description="Linux kernel", architectures=["Intel64"]),
            requirements.VersionRequirement(name="pslist", component=pslist.PsList, version=(4, 0, 0)),
            requirements.ListRequirement(name="pid", element_type=int, description="pids", optional=False),
        ]

    def _generator(self) -> Iterator[tuple[int, tuple[int, ...]]]:
        vmlinux = self.context.modules[self.config["kernel"]]
        kernel = self.context.layers[vmlinux.layer_name]
        node_type = vmlinux.get_type("maple_range_64")
        slot, pivot = node_type.relative_child_offset("slot"), node_type.relative_child_offset("pivot")
        wanted = set(self.config["pid"])
        for task in pslist.PsList.list_tasks(self.context, vmlinux.name, filter_func=lambda t: t.pid not in wanted):
            root_at = task.mm.mm_mt.ma_root.vol.offset
            (root,) = struct.unpack("<Q", kernel.read(root_at, 8))
            process_layer = task.add_process_layer()
            dtb = self.context.layers[process_layer].config["page_map_offset"]
            yield (
                0,
                (
                    int(task.pid),
                    kernel.translate(root_at)[0],
                    root,
                    kernel.translate((root & NODE_MASK) + pivot)[0],
                    kernel.translate((root & NODE_MASK) + slot)[0],
                    int(dtb),
                ),
            )

    def run(self) -> renderers.TreeGrid:
        names = ("PID", "MA_ROOT_AT", "MA_ROOT", "PIVOT0_AT", "SLOT0_AT", "DTB")
        columns = [(name, int) for name in names]
        return renderers.TreeGrid(columns, self._generator())
