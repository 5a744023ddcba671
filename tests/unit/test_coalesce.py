"""The coalescer behind the MySQL store's `GET` of one task: keys queued together are fetched
by one call, each caller gets its own key's value, an error reaches every caller of its call,
and a caller that gives up does not hold the others up."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from schedule.store.coalesce import Coalescer


class Source:
    """A fetch that records its calls; `gate` holds a call until it is set."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def fetch(self, keys: Sequence[str]) -> Mapping[str, str]:
        self.calls.append(list(keys))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return {k: k.upper() for k in keys if not k.startswith("missing")}


async def test_keys_queued_together_are_fetched_by_one_call() -> None:
    source = Source()
    coalescer = Coalescer(source.fetch)
    found = await asyncio.gather(*(coalescer.get(k) for k in ["a", "b", "a", "missing"]))
    assert found == ["A", "B", "A", None]
    assert source.calls == [["a", "b", "missing"]]


async def test_keys_that_arrive_during_a_call_make_the_next_one() -> None:
    source = Source()
    source.gate.clear()
    coalescer = Coalescer(source.fetch)
    first = asyncio.ensure_future(coalescer.get("a"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(coalescer.get(k)) for k in ("b", "c")]
    await asyncio.sleep(0)
    assert source.calls == [["a"]]  # b and c wait for the call in flight
    source.gate.set()
    assert [await first, *[await f for f in later]] == ["A", "B", "C"]
    assert source.calls == [["a"], ["b", "c"]]


async def test_a_call_takes_at_most_limit_keys() -> None:
    source = Source()
    coalescer = Coalescer(source.fetch, limit=2)
    found = await asyncio.gather(*(coalescer.get(k) for k in "abcde"))
    assert found == list("ABCDE")
    assert source.calls == [["a", "b"], ["c", "d"], ["e"]]


async def test_an_error_reaches_every_caller_of_its_call_and_the_next_call_is_clean() -> None:
    source = Source()
    source.fail = ConnectionError("the database went away")
    coalescer = Coalescer(source.fetch)
    results = await asyncio.gather(*(coalescer.get(k) for k in "ab"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    source.fail = None
    assert await coalescer.get("c") == "C"


async def test_a_caller_that_gives_up_leaves_the_call_to_the_others() -> None:
    source = Source()
    source.gate.clear()
    coalescer = Coalescer(source.fetch)
    impatient = asyncio.ensure_future(coalescer.get("a"))
    patient = asyncio.ensure_future(coalescer.get("b"))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(impatient, 0.01)
    source.gate.set()
    assert await patient == "B"
    # keys whose every caller left before their call are not fetched
    source.gate.clear()
    blocked = asyncio.ensure_future(coalescer.get("c"))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(coalescer.get("d"))
    await asyncio.sleep(0)
    gone.cancel()
    source.gate.set()
    assert await blocked == "C"
    await asyncio.sleep(0)
    assert ["d"] not in source.calls
