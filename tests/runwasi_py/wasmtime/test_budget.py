"""One memory budget per container: the caps it sets, and guests that try to pass it."""

from __future__ import annotations

import pytest
import wasmtime
from hypothesis import given
from hypothesis import strategies as st

from runwasi_py._bundle.memory_limit import (
    DEFAULT_MEMORY_LIMIT,
    ENV_DEFAULT_MEMORY_LIMIT,
    effective_memory_limit,
    parse_size,
)
from runwasi_py.wasmtime._budget import TABLE_ELEMENT_BYTES, MemoryBudget, configure_engine

_MIB = 1 << 20
_PAGE = 65536


def many_memories(n: int) -> str:
    """A module with ``n`` memories and a ``grow_all`` that grows each as far as it goes."""
    mems = "\n".join(f"(memory $m{i} 1)" for i in range(n))
    grows = "\n".join(
        f"(block $done{i} (loop $l{i}"
        f" (br_if $done{i} (i32.eq (memory.grow $m{i} (i32.const 16)) (i32.const -1)))"
        f" (br $l{i})))"
        for i in range(n)
    )
    sizes = " ".join(f"(memory.size $m{i})" for i in range(n))
    adds = " ".join(["i32.add"] * (n - 1))
    return f"""(module {mems}
      (func (export "grow_all") {grows})
      (func (export "pages") (result i32) {sizes} {adds}))"""


def engine_for(max_memories: int) -> wasmtime.Engine:
    config = wasmtime.Config()
    configure_engine(config, max_memories)
    return wasmtime.Engine(config)


def instantiate(
    engine: wasmtime.Engine, wat: str, budget: MemoryBudget
) -> tuple[wasmtime.Store, wasmtime.Instance]:
    store = wasmtime.Store(engine)
    budget.apply(store)
    return store, wasmtime.Instance(store, wasmtime.Module(engine, wat), [])


def call(store: wasmtime.Store, instance: wasmtime.Instance, name: str) -> object:
    func = instance.exports(store)[name]
    assert isinstance(func, wasmtime.Func)
    return func(store)


# --- the split ------------------------------------------------------------------------


@given(
    total=st.integers(min_value=1, max_value=1 << 40),
    memories=st.integers(min_value=1, max_value=100),
    tables=st.integers(min_value=0, max_value=100),
)
def test_the_caps_never_add_up_to_more_than_the_budget(
    total: int, memories: int, tables: int
) -> None:
    budget = MemoryBudget.split(total, memories, tables)
    assert budget.worst_case <= total
    assert budget.memories == memories
    assert budget.tables == tables


def test_one_memory_gets_fifteen_sixteenths() -> None:
    budget = MemoryBudget.split(64 * _MIB)
    assert budget.memory_bytes == 60 * _MIB
    assert budget.tables * budget.table_elements * TABLE_ELEMENT_BYTES == 4 * _MIB


@pytest.mark.parametrize(("total", "memories"), [(0, 1), (-1, 1), (_MIB, 0)])
def test_a_meaningless_budget_is_refused(total: int, memories: int) -> None:
    with pytest.raises(ValueError, match="memory budget"):
        MemoryBudget.split(total, memories)


# --- guests against the caps ----------------------------------------------------------


def test_sixteen_memories_are_refused_when_multi_memory_is_off() -> None:
    engine = engine_for(1)
    with pytest.raises(wasmtime.WasmtimeError, match="memor"):
        wasmtime.Module(engine, many_memories(16))


def test_sixteen_memories_share_one_budget_when_enabled() -> None:
    total = 64 * _MIB
    budget = MemoryBudget.split(total, memories=16)
    store, instance = instantiate(engine_for(16), many_memories(16), budget)
    call(store, instance, "grow_all")
    used = call(store, instance, "pages")
    assert isinstance(used, int)
    assert used * _PAGE <= total
    assert used * _PAGE > total // 2  # each memory did get its share


def test_more_memories_than_the_budget_allows_fail_to_instantiate() -> None:
    budget = MemoryBudget.split(64 * _MIB, memories=2)
    with pytest.raises(wasmtime.WasmtimeError, match="memory count"):
        instantiate(engine_for(2), many_memories(3), budget)


def test_one_memory_grows_to_its_cap_and_no_further() -> None:
    budget = MemoryBudget.split(8 * _MIB)
    store, instance = instantiate(engine_for(1), many_memories(1), budget)
    call(store, instance, "grow_all")
    used = call(store, instance, "pages")
    assert isinstance(used, int)
    assert used * _PAGE <= budget.memory_bytes
    assert used * _PAGE > budget.memory_bytes - 16 * _PAGE


TABLES = """(module
  (table $a 1 funcref) (table $b 1 funcref)
  (func (export "grow") (result i32)
    (local $n i32)
    (block $done (loop $l
      (br_if $done (i32.eq (table.grow $a (ref.null func) (i32.const 4096)) (i32.const -1)))
      (br $l)))
    (block $done2 (loop $l2
      (br_if $done2 (i32.eq (table.grow $b (ref.null func) (i32.const 4096)) (i32.const -1)))
      (br $l2)))
    (i32.add (table.size $a) (table.size $b))))"""


def test_tables_stay_within_their_share() -> None:
    budget = MemoryBudget.split(16 * _MIB)
    store, instance = instantiate(engine_for(1), TABLES, budget)
    elements = call(store, instance, "grow")
    assert isinstance(elements, int)
    assert elements * TABLE_ELEMENT_BYTES <= 16 * _MIB // 16
    assert elements > 0


def test_too_many_tables_fail_to_instantiate() -> None:
    tables = " ".join(f"(table {i} funcref)" for i in range(9))
    with pytest.raises(wasmtime.WasmtimeError, match="table count"):
        instantiate(engine_for(1), f"(module {tables})", MemoryBudget.split(16 * _MIB))


def test_memory64_and_gc_are_off() -> None:
    engine = engine_for(1)
    with pytest.raises(wasmtime.WasmtimeError):
        wasmtime.Module(engine, "(module (memory i64 1))")
    with pytest.raises(wasmtime.WasmtimeError):
        wasmtime.Module(engine, "(module (type (struct (field i32))))")


# --- the default ceiling --------------------------------------------------------------


def test_the_spec_limit_wins() -> None:
    env = {ENV_DEFAULT_MEMORY_LIMIT: "1Gi"}
    assert effective_memory_limit(5 * _MIB, 7 * _MIB, env) == 5 * _MIB


def test_without_a_spec_limit_the_environment_then_the_config_decide() -> None:
    assert effective_memory_limit(None, 7 * _MIB, {ENV_DEFAULT_MEMORY_LIMIT: "256Mi"}) == (
        256 * _MIB
    )
    assert effective_memory_limit(None, 7 * _MIB, {}) == 7 * _MIB
    assert effective_memory_limit(-1, None, {}) is None
    assert effective_memory_limit(0, DEFAULT_MEMORY_LIMIT, {}) == 1 << 30
    assert effective_memory_limit(None, 7 * _MIB, {ENV_DEFAULT_MEMORY_LIMIT: "0"}) is None


def test_a_malformed_variable_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    env = {ENV_DEFAULT_MEMORY_LIMIT: "lots"}
    assert effective_memory_limit(None, 7 * _MIB, env) == 7 * _MIB
    assert ENV_DEFAULT_MEMORY_LIMIT in caplog.text


@pytest.mark.parametrize(
    ("text", "size"),
    [("1024", 1024), ("64Mi", 64 * _MIB), ("1G", 10**9), (" 2 gib ", 2 << 30), ("none", None)],
)
def test_sizes_parse(text: str, size: int | None) -> None:
    assert parse_size(text) == size


@given(st.text(max_size=30))
def test_any_text_parses_or_names_the_variable(text: str) -> None:
    try:
        size = parse_size(text)
    except ValueError as exc:
        assert ENV_DEFAULT_MEMORY_LIMIT in str(exc)  # noqa: PT017 (hypothesis drives the input)
    else:
        assert size is None or size > 0
