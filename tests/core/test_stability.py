"""The hold rule for records that vanish without draining (meshware._core.stability)."""

from __future__ import annotations

from meshware._core.stability import Stabilizer


def counts(**by_service: int):  # type: ignore[no-untyped-def]
    return lambda service: by_service.get(service, 0)


def test_a_graceful_withdrawal_is_applied_at_once() -> None:
    s = Stabilizer()
    assert not s.departs("k1", "users", "http://a:1", "draining", now=0)
    assert not s.held


def test_one_crash_is_removed_once_settled() -> None:
    s = Stabilizer(settle=0.5)
    assert s.departs("k1", "users", "http://a:1", "serving", now=0)
    assert s.due(0.4, counts(users=1)) == []
    assert s.due(0.5, counts(users=1)) == ["k1"]
    assert not s.held


def test_a_record_that_comes_back_while_settling_changes_nothing() -> None:
    s = Stabilizer(settle=0.5)
    for i in range(3):
        s.departs(f"k{i}", "users", f"http://a:{i}", "serving", now=0)
    for i in range(3):
        s.returned(f"k{i}")
    assert s.due(1, counts(users=3)) == []
    assert not s.departures


def test_a_mass_expiry_is_held_then_ends() -> None:
    s = Stabilizer(settle=0.5, hold=10)
    for i in range(5):
        s.departs(f"k{i}", "users", f"http://a:{i}", "serving", now=0.001 * i)
    assert s.due(0.6, counts(users=5)) == []  # a burst: all held
    assert len(s.held) == 5
    s.returned("k0")
    assert s.refused("http://a:1") == ["k1"]
    assert s.next_deadline() == 10.002
    assert sorted(s.due(10.01, counts(users=4))) == ["k2", "k3", "k4"]


def test_one_crash_among_many_is_not_a_burst() -> None:
    s = Stabilizer(settle=0.5)
    s.departs("k1", "users", "http://a:1", "serving", now=0)
    s.departs("k2", "orders", "http://b:1", "serving", now=0)  # two departures in the mesh...
    assert sorted(s.due(1, counts(users=5, orders=1))) == ["k1"]  # ...users kept most of its own
    assert list(s.held) == ["k2"]  # orders lost all of it: held
