"""Blocking work on a daemon thread of its own, awaited from the event loop with a bound.

A call that never returns (a read stuck in the kernel on a hung filesystem or device) then costs
one thread, never a thread of the loop's default executor (which every database call shares),
and never the process's exit: daemon threads are not joined when the interpreter stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from scanner.errors import Unavailable

T = TypeVar("T")


def start_thread(fn: Callable[[], T], name: str) -> tuple[asyncio.Future[T], threading.Thread]:
    """Run ``fn`` on a new daemon thread; its result or exception settles the returned future.

    Must be called on the event loop. If the loop is gone when ``fn`` returns, the result is
    dropped (nobody waits for it any more).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            setter(value)

    def main() -> None:
        try:
            result = fn()
        except BaseException as e:  # handed to the awaiting coroutine, which decides
            deliver(future.set_exception, e)
        else:
            deliver(future.set_result, result)

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, setter, value)

    thread = threading.Thread(target=main, name=name, daemon=True)
    thread.start()
    return future, thread


async def call_bounded(fn: Callable[[], T], timeout: float, what: str) -> T:
    """``fn()`` on its own thread; raises :class:`Unavailable` naming ``what`` after ``timeout`` s
    (the thread is left to finish or hang on its own)."""
    future, _ = start_thread(fn, what)
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout)
    except TimeoutError as e:
        raise Unavailable(f"{what} did not finish within {timeout:g} s") from e
