"""The background map writer: order, bounded queue, errors handed back, and nothing computed is lost on exit."""

import threading
import time

import pytest

from benchmark.core.writer import BackgroundWriter


def test_jobs_run_in_order_on_another_thread():
    seen, threads = [], set()
    with BackgroundWriter(depth=1) as w:
        for i in range(20):
            w.submit(lambda k: (seen.append(k), threads.add(threading.get_ident())), i)
    assert seen == list(range(20))
    assert threads == {threads.copy().pop()} and threading.get_ident() not in threads


def test_disabled_writer_runs_inline():
    seen = []
    with BackgroundWriter(enabled=False) as w:
        w.submit(lambda: seen.append(threading.get_ident()))
        assert seen == [threading.get_ident()]


def test_error_in_a_job_is_raised_in_the_caller_and_later_jobs_are_dropped():
    seen = []

    def bad():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with BackgroundWriter(depth=1) as w:
            w.submit(bad)
            for i in range(5):
                time.sleep(0.01)
                w.submit(seen.append, i)
    assert len(seen) < 5  # the failure stopped the stores that came after it


def test_leaving_on_an_interrupt_still_runs_every_submitted_job():
    seen = []

    def slow(k):
        time.sleep(0.02)
        seen.append(k)

    with pytest.raises(KeyboardInterrupt):
        with BackgroundWriter(depth=4) as w:
            for i in range(4):
                w.submit(slow, i)
            raise KeyboardInterrupt
    assert seen == [0, 1, 2, 3]


def test_depth_bounds_the_waiting_jobs():
    gate = threading.Event()
    with BackgroundWriter(depth=2) as w:
        w.submit(gate.wait)  # taken by the worker, which now blocks
        time.sleep(0.05)
        w.submit(lambda: None)
        w.submit(lambda: None)  # the queue is full now
        blocked = threading.Thread(target=w.submit, args=(lambda: None,))
        blocked.start()
        blocked.join(0.1)
        assert blocked.is_alive()  # a third waiting job blocks the submitter
        gate.set()
        blocked.join(5)
        assert not blocked.is_alive()


def test_depth_must_be_positive():
    with pytest.raises(ValueError):
        BackgroundWriter(depth=0)


def test_wait_returns_once_every_submitted_job_has_run_and_the_writer_stays_up():
    seen = []

    def slow(k):
        time.sleep(0.05)
        seen.append(k)

    with BackgroundWriter(depth=3) as w:
        for i in range(3):
            w.submit(slow, i)
        w.wait()
        assert seen == [0, 1, 2]  # without the wait the worker would still be sleeping in the first job
        w.submit(seen.append, 3)  # still accepting jobs
        w.wait()
        assert seen == [0, 1, 2, 3]


def test_wait_raises_the_error_of_a_job():
    with BackgroundWriter(depth=1) as w:
        w.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            w.wait()
