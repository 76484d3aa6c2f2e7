"""The ingress's adaptive batcher, on its own (no Ray): who waits for whom, and how errors reach callers."""

from __future__ import annotations

import asyncio

import pytest

from serve.batcher import AdaptiveBatcher


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))  # a hang fails the test instead of blocking the suite


async def doubled(items):
    await asyncio.sleep(0)
    return [ValueError(f"bad {i}") if i < 0 else 2 * i for i in items]


def test_a_lone_request_does_not_wait_for_company():
    async def main():
        batcher = AdaptiveBatcher(doubled, max_batch_size=8, max_wait_s=3600)  # waiting would hang the test
        with batcher.expect():
            (result, _) = await batcher.submit(5)
        return result, batcher.sizes, batcher.coming

    assert run(main()) == (10, {1: 1}, 0)


def test_a_batch_waits_for_requests_on_their_way():
    async def main():
        batcher = AdaptiveBatcher(doubled, max_batch_size=8, max_wait_s=3600)
        go = asyncio.Event()

        async def request(i, slow):
            with batcher.expect():
                if slow:
                    await go.wait()  # still parsing its body: the first request's batch waits for it
                return (await batcher.submit(i))[0]

        first = asyncio.create_task(request(1, False))
        second = asyncio.create_task(request(2, True))
        for _ in range(5):
            await asyncio.sleep(0)
        go.set()
        return await first, await second, batcher.sizes

    assert run(main()) == (2, 4, {2: 1})


def test_batches_are_capped_and_one_bad_item_fails_alone():
    async def main():
        batcher = AdaptiveBatcher(doubled, max_batch_size=3, max_wait_s=3600)

        async def request(i):
            with batcher.expect():
                return (await batcher.submit(i))[0]

        return await asyncio.gather(*(request(i) for i in (1, -1, 2, 3, 4)), return_exceptions=True), batcher

    results, batcher = run(main())
    assert results[0] == 2 and isinstance(results[1], ValueError) and results[2:] == [4, 6, 8]
    assert max(batcher.sizes) <= 3 and sum(k * n for k, n in batcher.sizes.items()) == 5 and batcher.coming == 0


def test_a_failed_batch_fails_each_caller():
    async def broken(items):
        raise RuntimeError("replica lost")

    async def main():
        batcher = AdaptiveBatcher(broken, max_batch_size=4, max_wait_s=0.0)
        with batcher.expect():
            await batcher.submit(1)

    with pytest.raises(RuntimeError, match="replica lost"):
        run(main())
