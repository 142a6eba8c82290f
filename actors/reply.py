"""`Reply`: the one-shot answer to one request, resolved by whoever finishes it.

A request to a ledger actor is answered after its write is committed, by the storage
writer's thread, so the answer cannot be the return value of the actor's handler (what
a pykka `ask` future would carry). A `Reply` is a bare lock released once: cheaper than
a future, and it can run a callback, so a socket thread can be told without blocking.
"""

from __future__ import annotations

import _thread
from collections.abc import Callable
from typing import Any

from capflow.actors.model.errors import CapflowError, Timeout


class Reply:
    __slots__ = ("_callback", "_done", "_error", "_lock", "_value")

    def __init__(self, callback: Callable[[Reply], None] | None = None):
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self._value: Any = None
        self._error: BaseException | None = None
        self._done = False
        self._callback = callback

    @property
    def done(self) -> bool:
        return self._done

    def resolve(self, value: Any) -> None:
        self._finish(value, None)

    def fail(self, error: BaseException) -> None:
        self._finish(None, error)

    def _finish(self, value: Any, error: BaseException | None) -> None:
        if self._done:
            return
        self._value, self._error, self._done = value, error, True
        self._lock.release()
        if self._callback is not None:
            self._callback(self)

    def get(self, timeout: float | None = None) -> Any:
        """The value, or raise the error; `Timeout` if nothing came within `timeout`."""
        if not self._done:
            if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
                raise Timeout("no answer in time; the outcome is unknown",
                              {"timeout_s": timeout})
            self._lock.release()
        if self._error is not None:
            raise self._error
        return self._value

    def result(self) -> tuple[Any, CapflowError | BaseException | None]:
        """(value, error) of a finished reply, for callbacks."""
        return self._value, self._error

    def finish_with(self, value: Any, error: BaseException | None) -> None:
        """Resolve with `value`, or fail with `error` when there is one."""
        if error is not None:
            self.fail(error)
        else:
            self.resolve(value)


def relay(reply: Reply, build: Callable[[Any], Any] | None = None
          ) -> Callable[[Reply], None]:
    """A callback that answers `reply` with the finished reply's value (through
    `build`), or with its error."""

    def relayed(r: Reply) -> None:
        value, error = r.result()
        if error is not None:
            reply.fail(error)
        else:
            reply.resolve(value if build is None else build(value))

    return relayed
