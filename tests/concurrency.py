"""Run callables on real threads, each thread with its own database connection."""

import queue
import threading

from django.db import connections

# PostgreSQL's default max_connections is 100; leave room for the test's own.
MAX_THREADS = 80


def run_concurrently(fn, args_list, *, threads: int | None = None):
    """Call fn(*args) for every args, from up to `threads` threads started together.

    The threads wait at a barrier, then drain a shared queue of calls, so up to
    `threads` calls are in flight at every moment. Returns (results, errors) in
    input order; in each position exactly one of the two is None.
    """
    count = min(threads or MAX_THREADS, len(args_list))
    calls: queue.Queue = queue.Queue()
    for index, args in enumerate(args_list):
        calls.put((index, args))
    results: list = [None] * len(args_list)
    errors: list = [None] * len(args_list)
    barrier = threading.Barrier(count)

    def worker():
        try:
            barrier.wait(timeout=60)
            while True:
                try:
                    index, args = calls.get_nowait()
                except queue.Empty:
                    return
                try:
                    results[index] = fn(*args)
                except Exception as exc:  # collected for the test to assert on
                    errors[index] = exc
        finally:
            connections.close_all()

    workers = [threading.Thread(target=worker) for _ in range(count)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=300)
    return results, errors
