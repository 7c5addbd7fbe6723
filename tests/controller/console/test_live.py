"""The console's change feed: each topic's stamp moves when (and only when) that topic's data changes.

The stamps are plain SQL over other packages' tables and a failing query is swallowed (a busy
database must not kill the feed), so this test is what catches a stamp reading a renamed column.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

from common.messages import DeviceState, Telemetry
from controller.console import queries
from controller.console.live import ChangeFeed
from controller.fleet.telemetry import TelemetryStore
from controller.jobs import JobStore, LocalJobRunner
from controller.registry import Registry
from controller.rollout.store import RolloutStore


def test_each_topic_moves_on_its_own_change(tmp_path):
    reg = Registry(tmp_path / "ws")
    store = JobStore(tmp_path / "ws" / "jobs.sqlite")
    runner = LocalJobRunner(store, {}, max_workers=1, workspace=tmp_path / "ws")
    telemetry = TelemetryStore(reg.db)
    RolloutStore(reg.db)  # its tables exist as they do once the engine ran
    services = SimpleNamespace(registry=reg, runner=runner, fleet=None, extra={})
    feed = ChangeFeed(services)
    feed._stamps = queries.stamps(services)  # noqa: SLF001 - start from "now", as subscribe() does
    assert all(v is not None for v in queries.stamps(services).values())
    assert feed.check() == []

    reg.devices.record_device_state(state=DeviceState(device_id="d1", session_id="s", online=True, profile="rpi4"))
    assert feed.check() == ["devices"]
    telemetry.write_batch([(Telemetry(device_id="d1", cpu_percent=1, mem_percent=2, rss_mb=3,
                                      ts=datetime.now(UTC)), None)])
    assert feed.check() == ["telemetry"]
    store.create("compression", {"technique": "int8-static"}, actor="t")
    assert feed.check() == ["jobs"]
    assert feed.check() == []
    store.close()
    reg.close()


def test_subscribers_get_coalesced_topics_and_tickets_are_single_use(tmp_path):
    reg = Registry(tmp_path / "ws")
    store = JobStore(tmp_path / "ws" / "jobs.sqlite")
    services = SimpleNamespace(registry=reg, runner=LocalJobRunner(store, {}, max_workers=1,
                                                                   workspace=tmp_path / "ws"), fleet=None, extra={})
    feed = ChangeFeed(services, interval_s=0.05)
    ticket = feed.issue_ticket()
    assert feed.redeem(ticket) and not feed.redeem(ticket) and not feed.redeem("forged")

    async def listen() -> list[str]:
        got: list[str] = []
        stream = feed.subscribe()
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.2)
        for _ in range(5):  # a burst of the same change before the reader wakes: one event
            feed._publish("devices")  # noqa: SLF001 - drive the fan-out directly
        got.append(await asyncio.wait_for(first, 2))
        feed._publish("jobs")  # noqa: SLF001
        got.append(await asyncio.wait_for(stream.__anext__(), 2))
        await stream.aclose()
        return got

    assert asyncio.run(listen()) == ["devices", "jobs"]
    store.close()
    reg.close()
