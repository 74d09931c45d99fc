"""Running calls at the same moment, for the tests of row locks on PostgreSQL."""

import threading
from collections.abc import Callable

from django.db import connection


def all_at_once(calls: list[Callable[[], object]]) -> list:
    """Run each callable in its own thread (so with its own database connection), released
    together by a barrier; their results, or the exceptions they raised, in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = calls[index]()
        except Exception as error:  # the test reads it
            results[index] = error
        finally:
            connection.close()  # each thread's own connection: never left open

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results
