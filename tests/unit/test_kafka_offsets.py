"""In-flight accounting: partition windows drawing on one process-wide budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trigger.sources.kafka.offsets import InFlightBudget, PartitionWindow


@pytest.mark.parametrize(
    ("bound", "frees_at"),
    [(1, 0), (2, 1), (3, 2), (4, 3), (8, 6), (8192, 6144)],
)
def test_budget_holds_at_its_bound_until_a_quarter_is_free(bound: int, frees_at: int) -> None:
    """The budget has no room from its bound until a quarter of it (at least one) is free."""
    budget = InFlightBudget(bound)
    changes: list[bool] = []
    budget.watch(lambda: changes.append(budget.held))
    budget.take(bound - 1)
    assert (budget.room, budget.held) == (1, False)
    budget.take(1)
    assert (budget.room, budget.held) == (0, True)
    budget.release(bound - frees_at - 1)
    assert (budget.room, budget.held) == (0, True)  # one short of a quarter free
    budget.release(1)
    assert (budget.room, budget.held) == (bound - frees_at, False)
    assert changes == [True, False]


def test_budget_refuses_more_than_its_room() -> None:
    """Taking beyond the room is a bug, not a silent overshoot."""
    budget = InFlightBudget(2)
    with pytest.raises(ValueError, match="room for 2"):
        budget.take(3)


def test_a_finished_record_behind_a_slow_one_frees_its_budget() -> None:
    """Only unfinished records count against the budget; the window keeps the rest."""
    budget = InFlightBudget(10)
    window = PartitionWindow(5, budget)
    for offset in range(3):
        window.take(offset)
    window.finish(1)
    window.finish(2)
    assert (window.in_flight, window.unfinished, budget.in_flight) == (3, 1, 1)
    assert window.commit_point is None


def test_window_room_is_the_smaller_of_its_own_and_the_budgets() -> None:
    """A partition may take only what both its window and the process budget allow."""
    budget = InFlightBudget(3)
    window = PartitionWindow(10, budget)
    assert window.room == 3
    window.take(0)
    assert window.room == 2
    window.retired = True
    assert window.room == 0


def test_released_window_gives_back_its_unfinished_records_once() -> None:
    """Dropping a window returns what it never finished; late finishes do not count twice."""
    budget = InFlightBudget(10)
    window = PartitionWindow(5, budget)
    for offset in range(4):
        window.take(offset)
    window.finish(0)
    window.release()
    window.release()
    window.finish(1)
    assert budget.in_flight == 0


def test_finishing_an_offset_twice_counts_once() -> None:
    """A repeated finish neither moves the commit point twice nor releases twice."""
    budget = InFlightBudget(10)
    window = PartitionWindow(5, budget)
    window.take(0)
    window.take(1)
    window.finish(1)
    window.finish(1)
    assert (budget.in_flight, window.unfinished) == (1, 1)


# --- property: any interleaving keeps the books and cannot wedge ---------------------------

operations = st.lists(
    st.tuples(
        st.sampled_from(["take", "finish", "drop"]),
        st.integers(0, 3),  # which partition
        st.integers(1, 12),  # how many to take / which unfinished one to finish
    ),
    max_size=200,
)


@given(
    bound=st.integers(1, 16),
    windows=st.lists(st.integers(1, 10), min_size=1, max_size=4),
    ops=operations,
)
def test_budget_and_windows_agree_under_any_interleaving(
    bound: int, windows: list[int], ops: list[tuple[str, int, int]]
) -> None:
    """However records are taken, finished out of order and partitions dropped, the budget
    counts exactly the unfinished records, never exceeds its bound, and whatever has no room
    is waiting on a record that is still being worked on (so it cannot wedge)."""
    budget = InFlightBudget(bound)
    live = [PartitionWindow(b, budget) for b in windows]
    next_offset = [0] * len(live)
    for op, which, n in ops:
        i = which % len(live)
        window = live[i]
        if op == "take":
            for _ in range(min(n, window.room)):
                window.take(next_offset[i])
                next_offset[i] += 1
        elif op == "finish":
            pending = [o for o in window.taken if o not in window.finished]
            if pending:
                window.finish(pending[n % len(pending)])
        else:  # the partition is given up, then assigned again from its commit point
            window.release()
            live[i] = PartitionWindow(window.bound, budget)
            next_offset[i] = window.commit_point or 0
        assert budget.in_flight == sum(w.unfinished for w in live)
        assert 0 <= budget.in_flight <= budget.peak <= bound
        for w in live:
            assert w.in_flight <= w.bound
            if w.taken:
                assert w.taken[0] not in w.finished  # the window starts at an unfinished one
            if w.held:
                assert w.unfinished > 0
        if budget.room == 0:
            assert budget.in_flight > 0
