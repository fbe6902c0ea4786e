"""The maple-tree walker on trees laid out as Linux 6.1 lays them out (lib/maple_tree.c encoding).

The root pointer is tagged (``mt_mk_root``: encoded node | 2); child pointers inside a node are
encoded nodes without that tag (``mt_mk_node``: node | type << 3 | 4), and each node's first word
names its parent. The real-guest oracle (Volatility 3 on the distribution guest) is in
``test_distro_lab.py``; these trees check the hostile cases a real guest does not show.
"""

from __future__ import annotations

import struct

import pytest

from scanner.guestos.linux.layout import Layout
from scanner.guestos.linux.vmas import vma_pointers
from scanner.guestos.problems import Limits, WalkError

from .test_walkers import BASE, kernel

LEAF_64, RANGE_64, ARANGE_64 = 1, 2, 3
MM = 0x1000 * 0x30
LAYOUT = Layout(
    {
        "mm.mm_mt": 0x40,
        "mt.ma_root": 0x8,
        "mr64.parent": 0,
        "mr64.pivot": 8,
        "mr64.slot": 128,
        "ma64.parent": 0,
        "ma64.pivot": 8,
        "ma64.slot": 80,
    },
    {"mr64.pivot": 15, "mr64.slot": 16, "ma64.pivot": 9, "ma64.slot": 10},
)
MAX = (1 << 64) - 1


def encoded(node: int, kind: int) -> int:
    return BASE + node | kind << 3 | 4


def put_node(mem: bytearray, node: int, parent: int, pivots: list[int], slots: list[int], arange: bool) -> None:
    struct.pack_into("<Q", mem, node, parent)
    pivot_at, slot_at = 8, 80 if arange else 128
    for i, p in enumerate(pivots):
        struct.pack_into("<Q", mem, node + pivot_at + 8 * i, p)
    for i, s in enumerate(slots):
        struct.pack_into("<Q", mem, node + slot_at + 8 * i, s)


def two_level(mem: bytearray) -> list[int]:
    """A root ``maple_arange_64`` over three ``maple_leaf_64`` nodes of 4 VMAs each; the VMAs in order."""
    root, leaves = 0x20000, [0x20100, 0x20200, 0x20300]
    vmas = [BASE + 0x40000 + 0x100 * i for i in range(12)]
    limits = [0x10FFF, 0x20FFF, MAX]
    for n, leaf in enumerate(leaves):
        low = 0x1000 * (n * 0x10)
        pivots = [low + 0x100 * (i + 1) - 1 for i in range(3)] + [limits[n]]
        put_node(mem, leaf, BASE + root | 0x1C, pivots, vmas[4 * n : 4 * n + 4], arange=False)
    put_node(mem, root, BASE + MM + 0x40 | 1, limits, [encoded(leaf, LEAF_64) for leaf in leaves], arange=True)
    struct.pack_into("<Q", mem, MM + 0x40 + 0x8, encoded(root, ARANGE_64) | 2)  # mm_mt.ma_root, tagged
    return vmas


def test_a_two_level_tree_yields_every_vma_in_order() -> None:
    mem = bytearray(1 << 20)
    vmas = two_level(mem)
    got = vma_pointers(kernel(mem), LAYOUT, BASE + MM, Limits())
    assert got == vmas


def test_a_child_that_names_another_parent_is_a_walk_error() -> None:
    mem = bytearray(1 << 20)
    two_level(mem)
    struct.pack_into("<Q", mem, 0x20200, BASE + 0x30000 | 0x1C)  # the second leaf claims another parent
    with pytest.raises(WalkError, match="parent"):
        vma_pointers(kernel(mem), LAYOUT, BASE + MM, Limits())


def test_a_slot_of_an_inner_node_that_is_no_node_is_a_walk_error() -> None:
    mem = bytearray(1 << 20)
    two_level(mem)
    struct.pack_into("<Q", mem, 0x20000 + 80 + 8, BASE + 0x20200 | 2)  # root-tagged, not a child encoding
    with pytest.raises(WalkError, match="not a node"):
        vma_pointers(kernel(mem), LAYOUT, BASE + MM, Limits())


def test_a_cycle_through_a_child_is_a_walk_error() -> None:
    mem = bytearray(1 << 20)
    two_level(mem)
    # the first leaf becomes an inner node pointing back at the root
    put_node(mem, 0x20100, BASE + 0x20000 | 0x1C, [0x10FFF], [encoded(0x20000, ARANGE_64)], arange=False)
    struct.pack_into("<Q", mem, 0x20000 + 80, encoded(0x20100, RANGE_64))
    with pytest.raises(WalkError):
        vma_pointers(kernel(mem), LAYOUT, BASE + MM, Limits())
