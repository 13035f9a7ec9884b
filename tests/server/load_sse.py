"""SSE fan-out load: N subscribers on one `tidebase serve` process receive every event of a run, in order, while a
writer appends events at a steady rate. Reports delivery latency (write acknowledged -> line received) p50/p99.

Run standalone: `python tests/server/load_sse.py <server url> [subscribers] [events] [rate per s]`.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import httpx


async def subscriber(host: str, port: int, run_id: str, expect: int, ready: asyncio.Event, counter: list[int],
                     sent: dict[int, float], out: list[tuple[int, float]]) -> list[int]:
    reader, writer = await asyncio.open_connection(host, port, limit=2**20)
    writer.write(f"GET /runs/{run_id}/events HTTP/1.1\r\nHost: {host}\r\naccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    seqs: list[int] = []
    try:
        while len(seqs) < expect:
            line = await reader.readline()
            if not line:
                break
            if line.startswith(b"data:"):
                now = time.perf_counter()
                seq = json.loads(line[5:])["seq"]
                seqs.append(seq)
                if seq == 1:
                    counter[0] += 1
                    if counter[0] == counter[1]:
                        ready.set()
                elif seq in sent:
                    out.append((seq, now - sent[seq]))
    finally:
        writer.close()
    return seqs


async def run_load(url: str, subscribers: int = 1000, events: int = 50, rate: float = 10.0) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        run_id = (await http.post("/runs/load", json={})).json()["run"]["id"]
        ready = asyncio.Event()
        counter = [0, subscribers]
        sent: dict[int, float] = {}
        latencies: list[tuple[int, float]] = []
        t_connect = time.perf_counter()
        tasks = [asyncio.create_task(subscriber(host, port, run_id, events + 1, ready, counter, sent, latencies))
                 for _ in range(subscribers)]
        await asyncio.wait_for(ready.wait(), timeout=120)
        connect_s = time.perf_counter() - t_connect
        for i in range(events):
            t0 = time.perf_counter()
            sent[i + 2] = t0  # this write appends seq i + 2 (run.created is seq 1, one writer)
            r = await http.put(f"/runs/{run_id}/state", json={"value": i})
            assert r.status_code == 200, r.text
            await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - t0)))
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    expected = list(range(1, events + 2))
    complete = sum(1 for seqs in results if seqs == expected)
    lat = sorted(x for _, x in latencies)
    return {
        "subscribers": subscribers, "events": events, "rate_per_s": rate, "connect_s": round(connect_s, 2),
        "subscribers_complete_in_order": complete, "deliveries": len(lat),
        "p50_ms": round(statistics.median(lat) * 1000, 1),
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1), "max_ms": round(lat[-1] * 1000, 1),
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(asyncio.run(run_load(args[0], *(int(a) for a in args[1:3]),
                                          *(float(a) for a in args[3:4])))))
