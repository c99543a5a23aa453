"""The router on its own: leases, cancellations, capacity and who gets an item next."""

from __future__ import annotations

import threading
import time

import pytest

from pellucid.server.engine.errors import DeadlineExceeded, Unavailable
from pellucid.server.engine.routing import CLOSE, Cancel, Dispatch, Router, Session


@pytest.fixture
def router():  # type: ignore[no-untyped-def]
    r = Router(heartbeat_seconds=0.5, tick=0.02)
    yield r
    r.close()


def drain(session: Session) -> list[object]:
    messages = []
    while (m := session.next_message(0.01)) is not None:
        messages.append(m)
    return messages


def submit(router: Router, wait: float = 5.0, timeout: float = 5.0, **kwargs) -> tuple[threading.Thread, list]:  # type: ignore[no-untyped-def,type-arg]
    out: list = []  # type: ignore[type-arg]

    def run() -> None:
        try:
            out.append(router.submit("u", frozenset({"cpu"}), b"payload", timeout, wait, "model m", **kwargs))
        except Exception as exc:  # noqa: BLE001
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def dispatched(session: Session, timeout: float = 2.0) -> Dispatch:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = session.next_message(0.05)
        if isinstance(message, Dispatch):
            return message
    raise AssertionError("nothing dispatched")


def test_no_runner_is_unavailable_naming_the_model(router: Router) -> None:
    with pytest.raises(Unavailable, match=r"model m.*cpu"):
        router.submit("u", frozenset({"cpu"}), b"", 5.0, 0.2, "model m")


def test_labels_and_users_select_sessions(router: Router) -> None:
    other_user = router.open_session("someone-else", "r0", frozenset({"cpu"}), 4)
    wrong_labels = router.open_session("u", "r1", frozenset({"gpu"}), 4)
    with pytest.raises(Unavailable):
        router.submit("u", frozenset({"cpu"}), b"", 5.0, 0.2, "model m")
    assert not [m for m in drain(other_user) + drain(wrong_labels) if isinstance(m, Dispatch)]


def test_an_expired_lease_moves_the_item_to_another_session(router: Router) -> None:
    slow = router.open_session("u", "slow", frozenset({"cpu", "x"}), 1)
    thread, out = submit(router, timeout=0.3)
    first = dispatched(slow)
    fast = router.open_session("u", "fast", frozenset({"cpu"}), 1)
    second = dispatched(fast)
    assert second.item_id == first.item_id
    assert any(isinstance(m, Cancel) for m in drain(slow))
    router.complete(fast, second.item_id, b"answer")
    thread.join(5)
    assert out == [(b"answer", "fast")]
    router.complete(slow, first.item_id, b"late")  # dropped: the first answer won
    assert out == [(b"answer", "fast")]


def test_a_taken_back_item_keeps_its_slot_until_the_runner_lets_go(router: Router) -> None:
    session = router.open_session("u", "r", frozenset({"cpu"}), 1)
    thread, out = submit(router, wait=0.2)
    item = dispatched(session)
    thread.join(5)
    assert isinstance(out[0], DeadlineExceeded)
    assert item.item_id in session.zombies  # cancelled, but the runner may still be computing it
    second, out2 = submit(router, wait=3.0)
    time.sleep(0.2)
    assert not [m for m in drain(session) if isinstance(m, Dispatch)]  # no slot free yet
    router.heartbeat(session, draining=False, working_on=frozenset())  # the runner dropped it
    fresh = dispatched(session)
    router.complete(session, fresh.item_id, b"ok")
    second.join(5)
    assert out2 == [(b"ok", "r")]


def test_a_late_answer_cancels_the_copy_elsewhere(router: Router) -> None:
    a = router.open_session("u", "a", frozenset({"cpu"}), 1)
    thread, out = submit(router, timeout=0.3)
    item = dispatched(a)
    b = router.open_session("u", "b", frozenset({"cpu"}), 1)
    again = dispatched(b)
    router.complete(a, item.item_id, b"from a")  # a was slow, but answers first after all
    thread.join(5)
    assert out == [(b"from a", "a")]
    assert any(isinstance(m, Cancel) and m.item_id == again.item_id for m in drain(b))
    assert again.item_id in b.zombies and not b.in_flight


def test_a_closed_session_gives_its_items_away(router: Router) -> None:
    dying = router.open_session("u", "dying", frozenset({"cpu"}), 1)
    thread, out = submit(router)
    item = dispatched(dying)
    router.close_session(dying)
    assert CLOSE in drain(dying)
    heir = router.open_session("u", "heir", frozenset({"cpu"}), 1)
    assert dispatched(heir).item_id == item.item_id
    router.complete(heir, item.item_id, b"done")
    thread.join(5)
    assert out == [(b"done", "heir")]


def test_a_silent_session_is_dropped(router: Router) -> None:
    silent = router.open_session("u", "silent", frozenset({"cpu"}), 1)
    thread, out = submit(router)
    dispatched(silent)
    time.sleep(2.0)  # 3 missed heartbeats of 0.5 s
    assert silent.closed
    heir = router.open_session("u", "heir", frozenset({"cpu"}), 1)
    router.complete(heir, dispatched(heir).item_id, b"x")
    thread.join(5)
    assert out == [(b"x", "heir")]


def test_abandoned_callers_cancel_at_once(router: Router) -> None:
    session = router.open_session("u", "r", frozenset({"cpu"}), 1)
    gone = threading.Event()
    thread, out = submit(router, wait=30.0, abandoned=gone)
    dispatched(session)
    started = time.monotonic()
    gone.set()
    thread.join(5)
    assert time.monotonic() - started < 1.0 and isinstance(out[0], DeadlineExceeded)
    assert any(isinstance(m, Cancel) for m in drain(session))
