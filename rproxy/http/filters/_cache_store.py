"""The storing side of L{rproxy.http.filters.cache.CacheFilter}: a backend's
response teed into the store (L{begin_store}, L{store_response}), a 304
merged into the stale response it revalidated (L{revalidated}), a stored
response served in a backend response's place (L{in_place}), and a
response not stored (L{uncacheable})."""

from __future__ import annotations

from attrs import evolve

from rproxy.cache.answers import Answer, answer
from rproxy.cache.coalescing import STORED, UNCACHEABLE
from rproxy.cache.conditional import evaluate, merge_not_modified, not_modified_headers
from rproxy.cache.control import response_policy
from rproxy.cache.entry import StoredResponse
from rproxy.cache.request import RequestState, Tee
from rproxy.cache.shared import Cache
from rproxy.cache.storing import not_storable, stored_headers
from rproxy.cache.variants import request_variant, vary_names
from rproxy.http.framing import ResponseHead

__all__ = ["begin_store", "in_place", "revalidated", "store_response", "uncacheable"]


def begin_store(
    cache: Cache, head: ResponseHead, state: RequestState, now: float
) -> None:
    """
    Start storing the backend's response C{head} for C{state} as it streams
    (a L{Tee}), or say why it is not stored; a client whose validators
    match it gets a 304 in its place.
    """
    settings = cache.settings
    policy = response_policy(head.headers, settings.targets)
    why = not_storable(
        state.method,
        head.status,
        state.client_headers,
        state.directives,
        head.headers,
        policy,
        settings,
    )
    if why is None and (head.content_length or 0) > cache.max_object:
        why = "too-large"
    if why is not None:
        state.status.detail = why
        if state.stale is not None and head.status < 500:
            cache.store.remove(state.stale)  # the origin has a new answer
        uncacheable(cache, state)
        return
    vary = vary_names(head.headers) or ()
    pending = StoredResponse(
        state.key,
        vary,
        request_variant(vary, state.client_headers),
        head.status,
        head.reason,
        stored_headers(head.headers, policy, settings, now),
        state.request_time,
        now,
        0,
    )
    state.tee = Tee(pending, cache.max_object)
    state.status.stored = True
    if (
        state.check_client
        and not state.background
        and evaluate(state.method, state.client_headers, pending.headers) == 304
    ):
        # The client has this response: tell it so, and store it.
        state.replace = (Answer(304, b"Not Modified", [], None, None), pending)
        head.status, head.reason = 304, b"Not Modified"
        head.headers = not_modified_headers(head.headers)
        head.body, head.content_length = "none", None


def uncacheable(cache: Cache, state: RequestState) -> None:
    """
    C{state}'s response is not stored: the requests waiting for it go to
    the backend, and the key passes for a while (hit-for-pass).
    """
    fetch, state.fetch = state.fetch, None
    coalescer = cache.coalescer
    if fetch is not None:
        coalescer.mark_pass(state.key)
        cache.count("pass")
        coalescer.finish(fetch, UNCACHEABLE)


def revalidated(
    cache: Cache,
    head: ResponseHead,
    state: RequestState,
    stale: StoredResponse,
    now: float,
) -> None:
    """
    The backend answered C{stale}'s revalidation with the 304 C{head}:
    update the stored response and serve it in the 304's place.
    """
    merged = merge_not_modified(stale.headers, head.headers)
    # The store owns what it holds: it gives back the updated response.
    asked = state.request_time
    fresh = cache.store.update(stale, merged, request_time=asked, response_time=now)
    if fresh is None:  # gone from the store meanwhile: serve it anyway
        fresh = evolve(stale, headers=merged, request_time=asked, response_time=now)
    cache.count("revalidated")
    cache.coalescer.clear_pass(state.key)
    fetch, state.fetch = state.fetch, None
    if fetch is not None:
        cache.coalescer.finish(fetch, STORED)
    verdict = cache.judge(fresh, {}, now)
    state.status.ttl = verdict.ttl
    if not state.background:
        in_place(cache, head, state, fresh, verdict.age)


def in_place(
    cache: Cache,
    head: ResponseHead,
    state: RequestState,
    entry: StoredResponse,
    age: float,
) -> None:
    """Answer from C{entry} in the backend's response's place."""
    state.store = False
    built = answer(
        entry,
        state.method,
        state.client_headers,
        age,
        state.status.render(cache.settings.status_name),
        state.names,
    )
    head.status, head.reason = built.status, built.reason
    head.headers = list(built.headers)
    if built.length is not None and built.status != 204:
        head.headers.append((b"Content-Length", b"%d" % built.length))
    if built.span is not None:
        head.body, head.content_length = "length", built.length
    else:
        head.body, head.content_length = "none", None
    state.replace = (built, entry)


def store_response(
    cache: Cache, state: RequestState, trailers: list[tuple[bytes, bytes]]
) -> None:
    """Store the response C{state} teed, whole, with its C{trailers}."""
    tee = state.tee
    assert tee is not None
    state.tee = None
    entry = tee.finish(trailers)
    if state.stale is not None and (
        state.stale.vary != entry.vary or state.stale.variant != entry.variant
    ):
        cache.store.remove(state.stale)
    cache.store.put(entry)
    cache.count("stored")
    cache.coalescer.clear_pass(state.key)
    fetch, state.fetch = state.fetch, None
    if fetch is not None:
        cache.coalescer.finish(fetch, STORED)
