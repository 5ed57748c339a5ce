"""Running an exchange's events through its filters: L{FilterChain} (the
hooks of one listener or route, worked out once when settings are built)
and L{Pipe} (one direction of one exchange, suspending where a hook returns
a Deferred)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from rproxy.http.filters import HTTPFilter, LocalReply, filter_hooks

__all__ = [
    "BODY",
    "END",
    "HEAD",
    "NO_FILTERS",
    "REQUEST",
    "RESPONSE",
    "FilterChain",
    "Pipe",
    "PipeOwner",
]

#: the kinds of event a pipe carries.
HEAD, BODY, END = 0, 1, 2
#: the sides of an exchange a pipe carries.
REQUEST, RESPONSE = 0, 1

Hook = Callable[..., Any]


class FilterChain:
    """
    The hooks of a sequence of filters, split by event: request hooks in
    order, response hooks in reverse order.  Empty tuples where no filter
    does anything, so a chain without filters costs a truth test.

    @ivar filters: the filters, in request order.
    @ivar requests: whether any request hook is set.
    @ivar responses: whether any response hook is set.
    """

    __slots__ = (
        "_outer",
        "filters",
        "request_body",
        "request_end",
        "request_head",
        "requests",
        "response_body",
        "response_end",
        "response_head",
        "responses",
    )

    def __init__(self, filters: Sequence[Any] = ()) -> None:
        self.filters: tuple[Any, ...] = tuple(filters)
        self.request_head = filter_hooks(self.filters, "request_head")
        self.request_body = filter_hooks(self.filters, "request_body")
        self.request_end = _end_hooks(self.filters, "request", trailers=False)
        backwards = self.filters[::-1]
        self.response_head = filter_hooks(backwards, "response_head")
        self.response_body = filter_hooks(backwards, "response_body")
        self.response_end = _end_hooks(backwards, "response", trailers=True)
        self.requests = bool(self.request_head or self.request_body or self.request_end)
        self.responses = bool(
            self.response_head or self.response_body or self.response_end
        )
        self._outer: dict[int, FilterChain] = {}

    def outer(self, hook: Hook | None) -> FilterChain:
        """
        The chain of the filters before the one whose C{hook} this is (in
        request order): those a response that filter makes goes through.
        """
        owner = getattr(hook, "__self__", None)
        found = self._outer.get(id(owner))
        if found is None:
            index = next((i for i, one in enumerate(self.filters) if one is owner), -1)
            if index <= 0:
                return NO_FILTERS  # the first filter, or not one of these
            found = self._outer[id(owner)] = FilterChain(self.filters[:index])
        return found

    def __add__(self, other: FilterChain) -> FilterChain:
        return FilterChain(self.filters + other.filters)

    def __bool__(self) -> bool:
        return bool(self.filters)

    def __repr__(self) -> str:
        names = ", ".join(getattr(f, "name", type(f).__name__) for f in self.filters)
        return f"<FilterChain [{names}]>"


class _EndHook:
    """
    A filter's end hook as a pipe calls it, C{(exchange, trailers)} (a
    C{request_end} takes only the exchange), and where the body hooks of the
    filters after it begin: the bytes it returns go through those.
    """

    __slots__ = ("body_from", "hook", "trailers")

    def __init__(self, hook: Hook, body_from: int, trailers: bool) -> None:
        self.hook = hook
        self.body_from = body_from
        self.trailers = trailers

    def __call__(self, subject: Any, value: Any) -> Any:
        return self.hook(subject, value) if self.trailers else self.hook(subject)


def _end_hooks(
    filters: Sequence[Any], side: str, *, trailers: bool
) -> tuple[_EndHook, ...]:
    """
    The C{side}_end hooks of C{filters} (as L{filter_hooks} picks them),
    each knowing where the later filters' C{side}_body hooks begin.
    """
    body_default = getattr(HTTPFilter, side + "_body")
    end_default = getattr(HTTPFilter, side + "_end")
    hooks = []
    bodies = 0
    for one in filters:
        if getattr(type(one), side + "_body", None) is not body_default:
            bodies += 1
        if getattr(type(one), side + "_end", None) is not end_default:
            hooks.append(_EndHook(getattr(one, side + "_end"), bodies, trailers))
    return tuple(hooks)


#: the chain of a listener or route without filters.
NO_FILTERS = FilterChain()


class PipeOwner(TypingProtocol):
    """
    What a L{Pipe} reports to (the exchange): each method gets the pipe's
    C{side} (L{REQUEST} or L{RESPONSE}).
    """

    def pipe_deliver(self, side: int, kind: int, value: Any) -> None:
        """An event went through every hook."""

    def pipe_local(self, side: int, reply: LocalReply, hook: Hook) -> None:
        """A head hook (C{hook}) answered locally; the pipe has ended."""

    def pipe_failed(self, failure: Failure) -> None:
        """A hook raised or its Deferred failed; the pipe has ended."""

    def pipe_pause(self, side: int) -> None:
        """A hook suspended the pipe: stop producing events for it."""

    def pipe_resume(self, side: int) -> None:
        """The pipe drained: events may come again."""


class Pipe:
    """
    One direction (C{side}) of one exchange: head, body and end events
    passed through hooks to the owner, in order.

    A hook that returns a Deferred suspends the pipe: the owner is told to
    pause, later events queue, and when the Deferred fires the event goes
    on from the next hook, the queue drains and the owner is told to
    resume.  A head hook's L{LocalReply} goes to the owner and ends the
    pipe; so does an exception (or a failed Deferred).  A pipe closed while
    a hook is suspended (the exchange ended: its client went away, it timed
    out) cancels that hook's Deferred, so the filter can release what it
    holds for it (give the Deferred a canceller).

    @ivar hooks: per event kind, the hook list (a head's list may grow while
        it runs: routing adds the route's hooks).
    """

    __slots__ = (
        "_owner",
        "_queue",
        "_waiting",
        "closed",
        "hooks",
        "side",
        "suspended",
    )

    def __init__(
        self,
        owner: PipeOwner,
        side: int,
        hooks: tuple[Sequence[Hook], Sequence[Hook], Sequence[Hook]],
    ) -> None:
        self._owner = owner
        self.side = side
        self.hooks = hooks
        self.suspended = False
        self.closed = False
        self._queue: list[tuple[int, Any, int]] = []
        #: the Deferred of the hook the pipe is suspended on.
        self._waiting: Deferred[Any] | None = None

    def push(self, kind: int, value: Any) -> None:
        """
        Send an event (a head, body bytes, or for an end its trailers or
        C{None}) through the hooks.
        """
        if self.closed:
            return
        if self.suspended or self._queue:
            self._queue.append((kind, value, 0))
            return
        if not self.hooks[kind]:
            # No filter does anything with this kind of event.
            self._owner.pipe_deliver(self.side, kind, value)
            return
        self._run(kind, value, 0)
        if self._queue:
            self._drain()

    def close(self) -> None:
        """
        Drop what is queued; nothing more passes.  A hook's Deferred still
        pending is cancelled.
        """
        self.closed = True
        self._queue.clear()
        waiting = self._waiting
        if waiting is not None:
            self._waiting = None
            waiting.cancel()

    def _drain(self) -> None:
        queue = self._queue
        while queue and not self.suspended and not self.closed:
            kind, value, index = queue.pop(0)
            self._run(kind, value, index)

    def _run(self, kind: int, value: Any, index: int) -> None:
        hooks = self.hooks[kind]
        owner = self._owner
        while index < len(hooks):
            try:
                result = hooks[index](owner, value)
            except Exception:
                self._fail(Failure())
                return
            index += 1
            if result is None and kind == HEAD:
                continue  # the common answer: go on
            if isinstance(result, Deferred):
                self.suspended = True
                self._waiting = result
                self._owner.pipe_pause(self.side)
                result.addCallbacks(
                    self._resumed,
                    self._wait_failed,
                    callbackArgs=(kind, value, index),
                )
                return
            if not self._went_on(kind, value, index, result):
                return
            if kind == BODY:
                value = result
        if not self.closed:
            self._owner.pipe_deliver(self.side, kind, value)

    def _went_on(self, kind: int, value: Any, index: int, result: Any) -> bool:
        """
        Apply one hook's C{result}; whether the event goes on to the next.
        """
        if kind == HEAD:
            if result is None:
                return True
            if isinstance(result, LocalReply):
                self.close()
                self._owner.pipe_local(self.side, result, self.hooks[HEAD][index - 1])
                return False
            self._fail(Failure(TypeError(f"a head hook returned {result!r}")))
            return False
        if kind == BODY:
            return bool(result)
        if result:
            # Bytes a hook adds at the end go through the later filters'
            # body hooks first.
            body_from = getattr(self.hooks[END][index - 1], "body_from", index)
            self._queue[:0] = [(BODY, result, body_from), (END, value, index)]
            return False
        return True

    def _resumed(self, result: Any, kind: int, value: Any, index: int) -> None:
        self._waiting = None
        if self.closed:
            return
        self.suspended = False
        if self._went_on(kind, value, index, result):
            self._run(kind, result if kind == BODY else value, index)
        self._drain()
        if not self.suspended and not self.closed:
            self._owner.pipe_resume(self.side)

    def _wait_failed(self, failure: Failure) -> None:
        self._waiting = None
        self._fail(failure)

    def _fail(self, failure: Failure) -> None:
        if self.closed:
            return
        self.close()
        self._owner.pipe_failed(failure)
