"""asm_kernel.views: the byte-bounded per-kernel view caches the framework adapters share."""

from __future__ import annotations

import gc
import weakref

from asm_kernel.views import PerKernel, ViewCache


class Sized:
    def __init__(self) -> None:
        self.size = 0


def test_least_recently_used_views_are_dropped_past_the_bound_and_the_newest_kept() -> None:
    cache = ViewCache(Sized, max_bytes=100)
    a, b, c = cache.get("a"), cache.get("b"), cache.get("c")
    a.size = b.size = c.size = 40
    assert cache.get("a") is a  # now the most recently used: b goes first
    cache.trim()
    assert cache.stats == (2, 80)
    assert cache.get("a") is a and cache.get("c") is c and cache.get("b") is not b  # b is rebuilt empty
    big = cache.get("big")
    big.size = 1000
    cache.trim()
    assert cache.stats == (1, 1000) and cache.get("big") is big  # over the bound alone, still kept


def test_with_many_views_the_sizes_are_summed_every_64th_trim() -> None:
    cache = ViewCache(Sized, max_bytes=10)
    for n in range(300):
        cache.get(str(n)).size = 1
    trimmed_at = next(n for n in range(1, 65) if (cache.trim(), cache.stats[0])[1] < 300)
    assert trimmed_at == 64 and cache.stats == (10, 10)


def test_one_cache_per_kernel_forgotten_on_request_and_gone_with_the_kernel() -> None:
    made: list[ViewCache[Sized]] = []

    def make() -> ViewCache[Sized]:
        made.append(ViewCache(Sized, max_bytes=10))
        return made[-1]

    caches = PerKernel(make)

    class Kernel:
        pass

    first, second = Kernel(), Kernel()
    assert caches.get(first) is caches.get(first) is made[0] and caches.get(second) is made[1]
    made[0].get("s")
    caches.forget(first)
    assert made[0].stats == (0, 0) and caches.get(first) is made[2]
    caches.forget(Kernel())  # a kernel never seen: nothing to drop

    short_lived = Kernel()
    fresh = PerKernel(lambda: ViewCache(Sized, max_bytes=10))
    held = weakref.ref(fresh.get(short_lived))
    assert held() is not None
    del short_lived
    gc.collect()
    assert held() is None  # the cache went with its kernel
