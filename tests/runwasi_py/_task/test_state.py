"""The task state table: every allowed move, every refused one, and the refusal's text."""

from __future__ import annotations

import itertools

import pytest

from runwasi_py import FailedPrecondition
from runwasi_py._task.state import TRANSITIONS, TaskState, transition
from ttrpc import Code

ALLOWED = {
    (TaskState.CREATED, TaskState.RUNNING),
    (TaskState.CREATED, TaskState.STOPPED),
    (TaskState.CREATED, TaskState.DELETED),
    (TaskState.RUNNING, TaskState.STOPPED),
    (TaskState.STOPPED, TaskState.DELETED),
}


def test_table_is_exactly_the_documented_life() -> None:
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == ALLOWED
    assert set(TRANSITIONS) == set(TaskState)


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED, key=str))
def test_allowed_transition_returns_the_target(current: TaskState, target: TaskState) -> None:
    assert transition(current, target) is target


@pytest.mark.parametrize(
    ("current", "target"),
    [p for p in itertools.product(TaskState, TaskState) if p not in ALLOWED],
)
def test_illegal_transition_is_failed_precondition_naming_both_states(
    current: TaskState, target: TaskState
) -> None:
    with pytest.raises(FailedPrecondition) as info:
        transition(current, target, task_id="c9")
    assert info.value.code == Code.FAILED_PRECONDITION
    assert f"{current.value} => {target.value}" in info.value.message
    assert "c9" in info.value.message


def test_deleted_is_final() -> None:
    assert TRANSITIONS[TaskState.DELETED] == frozenset()


def test_table_cannot_be_changed_at_runtime() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[TaskState.DELETED] = frozenset({TaskState.CREATED})  # type: ignore[index]
