"""Pools in several processes balance as one: each sees the servers' real load (/metrics)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

from critpath.adapters import OpenAICompatible, Pool
from critpath.adapters.sim.server import SimServer, build_fleet

# Another process: ``n`` requests to one server, slow enough (time_scale) to stay running
# there while the test looks.
_OTHER = """
import asyncio, sys, httpx
async def main(base_url, n):
    async with httpx.AsyncClient(timeout=120) as client:
        body = {"model": "small", "prompt": "hold", "max_tokens": 64}
        calls = [asyncio.create_task(client.post(base_url + "/completions", json=body))
                 for _ in range(n)]
        await asyncio.sleep(0)
        print("sent", flush=True)
        await asyncio.gather(*calls)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


@pytest.fixture
async def servers() -> AsyncIterator[list[SimServer]]:
    fleets = [build_fleet(sizes=("small",), max_num_seqs=64, time_scale=100) for _ in range(2)]
    async with SimServer(fleets[0]) as a, SimServer(fleets[1]) as b:
        yield [a, b]


async def test_a_watching_pool_avoids_the_server_another_process_loads(
    servers: list[SimServer],
) -> None:
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _OTHER, servers[0].base_url, "4", stdout=asyncio.subprocess.PIPE
    )
    replicas = [OpenAICompatible(s.base_url, "small", name=f"small@{i}")
                for i, s in enumerate(servers)]  # fmt: skip
    pool = Pool(replicas)
    try:
        assert other.stdout is not None
        assert (await asyncio.wait_for(other.stdout.readline(), 30)).strip() == b"sent"
        # Alone, the pool would alternate: its own count says both servers are idle.
        assert [pool.acquire().index for _ in range(2)] == [0, 1]
        pool = Pool(replicas)
        async with pool.watch(interval=0.05):
            for _ in range(3000):  # until the other's requests reach its server
                if pool.statistics().replicas[0].server_outstanding == 4:
                    break
                await asyncio.sleep(0.01)
            leases = [pool.acquire() for _ in range(4)]
        assert [lease.index for lease in leases] == [1, 1, 1, 1]
        stats = pool.statistics().replicas
        assert (stats[0].load, stats[1].server_outstanding) == (4.0, 0.0)
    finally:
        other.kill()
        await other.wait()
        for r in replicas:
            await r.aclose()
