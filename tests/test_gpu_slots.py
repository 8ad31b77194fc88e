"""GPU slot assignment, exercised with lock files on the CPU (no GPU needed)."""

import multiprocessing as mp
import time

import pytest

from seglab.gpu_slots import acquire_slot


def _hold_slot(lock_dir, slots, queue, hold_s):
    slot = acquire_slot(slots, lock_dir, wait_s=30, poll_s=0.05)
    queue.put((slot.index, time.monotonic()))
    time.sleep(hold_s)
    slot.release()


def test_parallel_jobs_get_distinct_slots(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    jobs = [ctx.Process(target=_hold_slot, args=(tmp_path, 3, queue, 1.5)) for _ in range(3)]
    for job in jobs:
        job.start()
    taken = sorted(queue.get(timeout=60)[0] for _ in jobs)
    for job in jobs:
        job.join(timeout=60)
    assert taken == [0, 1, 2]


def test_a_job_waits_for_a_slot_and_takes_the_freed_one(tmp_path):
    first = acquire_slot(1, tmp_path)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    waiter = ctx.Process(target=_hold_slot, args=(tmp_path, 1, queue, 0.0))
    waiter.start()
    time.sleep(1.0)
    assert queue.empty(), "the second job must wait while the only slot is held"
    released_at = time.monotonic()
    first.release()
    index, got_at = queue.get(timeout=30)
    waiter.join(timeout=30)
    assert index == 0 and got_at >= released_at


def test_no_slot_times_out_with_a_clear_message(tmp_path):
    held = acquire_slot(1, tmp_path)
    with pytest.raises(TimeoutError, match="no free GPU slot"):
        acquire_slot(1, tmp_path, wait_s=0.2, poll_s=0.05)
    held.release()
