"""``SharedLimiter``: slots shared through a real Redis by limiters and OS processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from redis_server import RedisServer, redis_fixture

from critpath.adapters.prometheus import parse_metrics, server_load
from critpath.adapters.sim.server import SimServer, build_fleet
from critpath.errors import ConfigError
from critpath.serve.redis_limiter import SharedLimiter


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    yield from redis_fixture()


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait (polling the event loop) until ``condition()`` holds; fail after ``within`` s."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class Steps:
    """Steps queued on limiters; each runs until the test releases it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running: list[tuple[SharedLimiter, str]] = []
        self.started: list[str] = []
        self.peak = 0

    def queue(self, limiter: SharedLimiter, name: str, key: float = 0.0) -> None:
        def start(by: object = None) -> None:
            self.running.append((limiter, name))
            self.started.append(name)
            self.peak = max(self.peak, len(self.running))
            assert len(self.running) <= self.limit, "more steps than the shared limit"

        if limiter.acquire_or_wait((key,), "llm", start, self):
            start()

    def finish(self, name: str) -> None:
        i = next(i for i, (_, n) in enumerate(self.running) if n == name)
        limiter, _ = self.running.pop(i)
        limiter.release("llm")


async def test_two_limiters_share_the_limit_and_a_waiting_one_gets_its_share(
    redis: RedisServer,
) -> None:
    steps = Steps(limit=2)
    async with (
        SharedLimiter(redis.url, "t", {"llm": 2}) as a,
        SharedLimiter(redis.url, "t", {"llm": 2}) as b,
    ):
        for i in range(4):
            steps.queue(a, f"a{i}")
        await until(lambda: len(steps.running) == 2)
        for i in range(4):
            steps.queue(b, f"b{i}")
        # a learns that b waits; then a freed slot goes to b, not to a's next step
        await until(lambda: a.statistics()["shared"]["llm"]["other_processes_waiting"] == 1)  # type: ignore[index]
        steps.finish("a0")
        await until(lambda: any(n.startswith("b") for n in steps.started))
        assert steps.started[:3] == ["a0", "a1", "b0"]
        while len(steps.started) < 8:
            n = len(steps.started)
            steps.finish(steps.running[0][1])
            await until(lambda n=n: len(steps.started) > n)
        for _, name in list(steps.running):
            steps.finish(name)
        assert sorted(steps.started) == sorted([*(f"a{i}" for i in range(4)),
                                                *(f"b{i}" for i in range(4))])  # fmt: skip
        assert steps.peak == 2
        await until(lambda: a.statistics()["shared"]["llm"]["held"] == 0)  # type: ignore[index]


async def test_least_slack_first_within_a_process(redis: RedisServer) -> None:
    steps = Steps(limit=1)
    limiter = SharedLimiter(redis.url, "order", {"llm": 1})
    for key, name in ((3.0, "late"), (1.0, "urgent"), (2.0, "middle")):
        steps.queue(limiter, name, key)  # queued before any lease is held
    async with limiter:
        await until(lambda: steps.started == ["urgent"])
        steps.finish("urgent")
        await until(lambda: len(steps.started) == 2)
        steps.finish("middle")
        await until(lambda: len(steps.started) == 3)
        steps.finish("late")
    assert steps.started == ["urgent", "middle", "late"]


_HOLDER = """
import asyncio, sys
from critpath.serve.redis_limiter import SharedLimiter
async def main():
    limiter = SharedLimiter(sys.argv[1], "crash", {"llm": 2}, ttl=1.0)
    async with limiter:
        for _ in range(2):
            limiter.acquire_or_wait((0.0,), "llm", lambda _by: None, None)
        while limiter.statistics()["by_resource"]["llm"] < 2:
            await asyncio.sleep(0.01)
        print("holding", flush=True)
        await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_a_crashed_process_leases_expire(redis: RedisServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, redis.url, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.strip() == b"holding"
        proc.kill()  # SIGKILL: no chance to give its leases back
        await proc.wait()
        steps = Steps(limit=2)
        async with SharedLimiter(redis.url, "crash", {"llm": 2}, ttl=1.0) as limiter:
            steps.queue(limiter, "x")
            await until(lambda: limiter.statistics()["store_round_trips"] >= 1)
            assert steps.started == []  # the dead process's leases still count
            await until(lambda: steps.started == ["x"], within=5.0)  # until they expire
            steps.finish("x")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_unreachable_redis_is_a_config_error() -> None:
    pytest.importorskip("redis")
    with RedisServerPort() as port:
        limiter = SharedLimiter(f"redis://127.0.0.1:{port}/0", "x", {"llm": 1})
        with pytest.raises(ConfigError, match="cannot reach Redis"):
            await limiter.__aenter__()


class RedisServerPort:
    """A loopback port with nothing listening on it (bound, never accepting)."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc_info: object) -> None:
        self._sock.close()


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        SharedLimiter("redis://127.0.0.1:1/0", "x", {})
    with pytest.raises(ConfigError):
        SharedLimiter("redis://127.0.0.1:1/0", "x", {"llm": 0})
    with pytest.raises(ConfigError):
        SharedLimiter("redis://127.0.0.1:1/0", "x", {"llm": 1}, ttl=0)


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    fleet = build_fleet(sizes=("small",), max_num_seqs=256, time_scale=0.3)
    async with SimServer(fleet) as server:
        yield server


async def test_two_processes_never_run_more_than_the_limit_at_the_server(
    redis: RedisServer, sim: SimServer
) -> None:
    limit, runs = 3, 12
    peak = 0
    samples = 0

    async def watch(client: httpx.AsyncClient) -> None:
        nonlocal peak, samples
        while True:
            text = (await client.get(sim.url + "/metrics")).text
            load = server_load(parse_metrics(text, model="small"))
            assert load is not None
            peak = max(peak, int(load.outstanding))
            samples += 1
            await asyncio.sleep(0.005)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    async with httpx.AsyncClient() as client:
        watcher = asyncio.create_task(watch(client))
        args = ("-m", "critpath.bench._scale_worker", redis.url, sim.base_url, str(limit),
                str(runs))  # fmt: skip
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, *args, stdout=asyncio.subprocess.PIPE, env=env
            )
            for _ in range(2)
        ]
        try:
            outs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
    reports = [json.loads(out.splitlines()[-1]) for out, _ in outs]
    assert [r["ok"] for r in reports] == [runs, runs]
    assert samples > 10
    assert peak == limit  # reached, never passed, with 2 x 12 runs competing
    assert all(r["stats"]["peak_running"] <= limit for r in reports)
