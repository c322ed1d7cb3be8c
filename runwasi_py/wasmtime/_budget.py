"""One memory budget per container, across all its linear memories and tables.

Theory of operation. wasmtime-py's ``Store.set_limits`` caps *each* linear memory at
``memory_size`` and *each* table at ``table_elements``; it has no callback that could sum
them. Capped per memory, a module with 16 memories under a 64 MiB limit reached 1 GiB.
The budget is therefore turned into per-item caps whose sum cannot pass it:

- the engine validates modules without the multi-memory proposal (and without memory64 and
  GC, whose heaps are separate allocations outside these caps) unless the shim enables
  more memories, so a module has at most one memory of its own;
- the store may create at most :attr:`MemoryBudget.memories` memories in all (this counts
  a component's core instances too) and :attr:`MemoryBudget.tables` tables;
- a sixteenth of the budget is set aside for tables, shared evenly between them (wasmtime
  counts 8 bytes per element); the rest is shared evenly between the memories.

With the default of one memory the guest gets 15/16 of its budget as linear memory. Why not
split by what the module declares instead: a memory's share must be fixed before it grows,
and a split by declared *minimum* sizes would starve the one memory that grows. A shim that
needs multi-memory modules sets ``WasmtimeSandbox.max_memories``; each memory then gets an
equal share, which is the honest reading of one budget for several of them.

A refused ``memory.grow`` returns -1 to the guest (no trap, no callback); the sandbox infers
out-of-memory from the trap that follows with a memory near its cap (see ``_sandbox``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import wasmtime

__all__ = ["TABLE_ELEMENT_BYTES", "MemoryBudget", "configure_engine"]

TABLE_ELEMENT_BYTES = 8
"""What wasmtime charges per table element (its ``set_limits`` documentation)."""
MAX_TABLES = 8
"""Tables a store may create: a compiled C/Rust module has one, a component a few more."""
_TABLE_SHARE = 16  # 1/16 of the budget for tables


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    """A container's budget in bytes and the per-item caps that keep its sum under it."""

    total: int
    memories: int
    memory_bytes: int
    tables: int
    table_elements: int

    @classmethod
    def split(cls, total: int, memories: int = 1, tables: int = MAX_TABLES) -> MemoryBudget:
        """Share ``total`` bytes between ``memories`` memories and ``tables`` tables."""
        if total < 1 or memories < 1 or tables < 0:
            raise ValueError(f"memory budget: total {total}, memories {memories}, tables {tables}")
        table_bytes = total // _TABLE_SHARE if tables else 0
        per_table = table_bytes // (TABLE_ELEMENT_BYTES * tables) if tables else 0
        return cls(
            total=total,
            memories=memories,
            memory_bytes=(total - table_bytes) // memories,
            tables=tables,
            table_elements=per_table,
        )

    @property
    def worst_case(self) -> int:
        """The most the guest can hold: every memory and every table at its cap."""
        tables = self.tables * self.table_elements * TABLE_ELEMENT_BYTES
        return self.memories * self.memory_bytes + tables

    def apply(self, store: wasmtime.Store) -> None:
        """Set these caps as ``store``'s limits (before anything is instantiated in it)."""
        store.set_limits(
            memory_size=self.memory_bytes,
            table_elements=self.table_elements,
            memories=self.memories,
            tables=self.tables,
        )


def configure_engine(config: wasmtime.Config, max_memories: int) -> str:
    """Turn off the features a budget cannot see; a tag for the compile cache key.

    Multi-memory stays on only when ``max_memories`` > 1 (the store's memory count caps
    them then); memory64 and GC are off.
    """
    multi = max_memories > 1
    config.wasm_multi_memory = multi
    config.wasm_memory64 = False
    config.wasm_gc = False
    return f"multi-memory={int(multi)}:memory64=0:gc=0"
