"""The dashboard in a real browser: Debian's chromium driven by Playwright.

A node runs in-process with its dashboard; a background task streams uplinks from a few
devices over real CoAP while the page is open. The test waits (with time limits, never
timed assertions) for the numbers to move, the charts to draw, the device table to list
the devices, and an injected anomaly to reach the feed; it fails on any console error or
uncaught exception in the page, and writes screenshots to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiocoap
import pytest

from fogrt.dashboard import Dashboard
from fogrt.node import FogNode
from tests.test_dashboard import TOPOLOGY, Devices, start_node

CHROMIUM = os.environ.get("FOGRT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"no chromium at {CHROMIUM} (Debian: apt-get install chromium)",
    ),
]

WAIT_MS = 15_000

# The JSON tests' topology plus a learning model, so the models view has one to chart.
WITH_MODEL = TOPOLOGY.replace(
    "sinks:\n",
    "  - {id: model, use: learn.anomaly, from: room, with: {fields: [temp], warmup: 20}}\n"
    "sinks:\n"
    "  - {id: scores, use: jsonl, from: model, with: {path: scores.jsonl}}\n",
)


async def stream_uplinks(devices: Devices, stop: asyncio.Event) -> None:
    """Five devices, each sending a few readings every 50 ms until ``stop``."""
    step = 0
    while not stop.is_set():
        for i in range(5):
            temps = [20.0 + i + (step % 7) * 0.5, 20.5 + i]
            await devices.send(f"sensor-{i}", temps, battery_pct=95 - 15 * i)
        step += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


@pytest.fixture(params=[1, 2], ids=["engine-process", "engine-partitions"])
async def live(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[FogNode, Dashboard, Devices]]:
    # As `fogrt run` (one engine process) and as `fogrt run --engines 2`.
    node = await start_node(tmp_path, WITH_MODEL, engine_process=True, engines=request.param)
    dash = Dashboard(node, "127.0.0.1", 0)
    await dash.start()
    ctx = await aiocoap.Context.create_client_context()
    try:
        yield node, dash, Devices(ctx, node)
    finally:
        await ctx.shutdown()
        await dash.stop()
        await node.stop()


async def series_pixels(page: object, selector: str, rgb: tuple[int, int, int]) -> int:
    """How many pixels of the chart's canvas have the series colour (it drew a line)."""
    return int(
        await page.evaluate(  # type: ignore[attr-defined]
            """([sel, rgb]) => {
                const c = document.querySelector(sel + " canvas");
                if (!c || !c.width) return 0;
                const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                let n = 0;
                for (let i = 0; i < d.length; i += 4) {
                    if (Math.abs(d[i] - rgb[0]) < 12 && Math.abs(d[i + 1] - rgb[1]) < 12 &&
                        Math.abs(d[i + 2] - rgb[2]) < 12 && d[i + 3] > 200) n++;
                }
                return n;
            }""",
            [selector, list(rgb)],
        )
    )


async def test_dashboard_comes_alive_in_a_real_browser(
    live: tuple[FogNode, Dashboard, Devices],
) -> None:
    from playwright.async_api import async_playwright

    node, dash, devices = live
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    stop = asyncio.Event()
    sender = asyncio.create_task(stream_uplinks(devices, stop))
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
            ],
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console.{m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
            page.on(
                "requestfailed",
                lambda r: (
                    problems.append(f"request failed: {r.url}")
                    if "/api/stream" not in r.url  # closed by the browser on teardown
                    else None
                ),
            )
            await page.goto(dash.url)
            await page.wait_for_selector("#live-dot.live", timeout=WAIT_MS)

            # Overview: the throughput number moves while uplinks stream in.
            await page.wait_for_function(
                "() => /[1-9]/.test(document.querySelector('#v-readings').textContent)",
                timeout=WAIT_MS,
            )
            first = await page.text_content("#v-readings")
            await page.wait_for_function(
                "(before) => document.querySelector('#v-readings').textContent !== before",
                arg=first,
                timeout=WAIT_MS,
            )
            # The charts exist and have drawn their series (pixels in the series colour).
            await page.wait_for_selector("#chart-throughput .uplot canvas", timeout=WAIT_MS)
            await page.wait_for_function(
                "() => window.fogrtCharts.length >= 3 && window.fogrtCharts[0].data[0].length >= 3",
                timeout=WAIT_MS,
            )
            assert await series_pixels(page, "#chart-throughput", (0x25, 0x63, 0xEB)) > 50
            assert await series_pixels(page, "#chart-latency", (0x7C, 0x3A, 0xED)) > 20
            assert (await page.text_content("#v-online")) == "5"
            engine = page.locator("#node-info tr", has_text="engine")
            pids = node.engine_pids
            if len(pids) == 1:
                assert f"process {pids[0]}, " in await engine.inner_text()  # then its memory
            else:
                assert f"2 processes ({pids[0]}, {pids[1]}), " in await engine.inner_text()
            assert "ms" in (await page.text_content("#v-p99") or "")

            # An injected anomaly shows up in the feed (and in the nav badge meanwhile).
            assert await devices.send("hot-1", [99.0]) == "2.04"
            await page.wait_for_selector("#anomaly-badge:not([hidden])", timeout=WAIT_MS)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            await page.click("nav a[data-view=anomalies]")
            row = page.locator("#anomalies tbody tr", has_text="hot-1")
            await row.wait_for(timeout=WAIT_MS)
            text = await row.inner_text()
            assert "detect" in text and "temp=99" in text and "0.99" in text
            await page.screenshot(path=str(ARTIFACTS / "dashboard-anomalies.png"))

            # Devices: the table lists them, filters and sorts on the server.
            await page.click("nav a[data-view=devices]")
            await page.wait_for_function(
                "() => document.querySelectorAll('#devices tbody tr').length === 6",
                timeout=WAIT_MS,
            )
            listed = await page.locator("#devices tbody tr").evaluate_all(
                "rows => rows.map(r => r.dataset.device)"
            )
            assert sorted(listed) == ["hot-1"] + [f"sensor-{i}" for i in range(5)]
            await page.click("#devices th[data-sort=battery]")  # highest battery first
            await page.wait_for_function(
                "() => document.querySelector('#devices tbody tr').dataset.device === 'sensor-0'",
                timeout=WAIT_MS,
            )
            await page.screenshot(path=str(ARTIFACTS / "dashboard-devices.png"))
            await page.fill("#device-filter", "sensor-3")
            await page.wait_for_function(
                "() => [...document.querySelectorAll('#devices tbody tr')]"
                ".map(r => r.dataset.device).join() === 'sensor-3'",
                timeout=WAIT_MS,
            )
            assert "1 of 6 devices match" in (await page.text_content("#device-count") or "")

            # Topology: every node is drawn, with live rates.
            await page.click("nav a[data-view=topology]")
            nodes = page.locator("#topology-graph g.node")
            assert await nodes.count() == len(node.topology.nodes)
            await page.wait_for_function(
                "() => /[1-9]/.test(document.querySelector('g[data-node=detect] .rate')"
                ".textContent)",
                timeout=WAIT_MS,
            )
            await page.screenshot(path=str(ARTIFACTS / "dashboard-topology.png"))

            # Models: one chart per operator metric, drawn.
            await page.click("nav a[data-view=models]")
            card = page.locator(".model-card[data-node=model]")
            await card.wait_for(timeout=WAIT_MS)
            await card.locator(".metric", has_text="events").wait_for(timeout=WAIT_MS)
            assert await page.locator(".model-card[data-node=clean] .uplot").count() >= 2
            await page.screenshot(path=str(ARTIFACTS / "dashboard-models.png"))
        finally:
            stop.set()
            await sender
            await browser.close()
    assert problems == []
