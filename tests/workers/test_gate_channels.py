"""Gate channels: the resolve token reaches approvers outside the system through the gate.created delivery (the gate's
own channels and the run's webhooks), and nowhere else: not in events, not in gate.resolved, not in the gates table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from test_webhooks import Endpoint

from fix_probe import wait_until
from tidebase import Tidebase
from tidebase.ops.webhooks import Dispatcher, verify_webhook_signature


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    yield e
    e.close()


def test_gate_created_delivery_carries_the_token_and_resolution_reaches_gate_channels(
    dsn: str, endpoint: Endpoint, db: psycopg.Connection[Any]
) -> None:
    """A gate with its own channel, in a run with a gate.* webhook: both receive gate.created with the resolve token
    (which resolves the gate), the gate channel receives gate.resolved without it, and no event stores the token."""
    tide = Tidebase(dsn)
    tide.workflow("w")(lambda run, input: run.gate(
        "approve", prompt="Ship it?", suspend=True,
        channels=[{"url": endpoint.url + "/ok", "secret": "gate-secret", "events": ["gate.created", "gate.resolved"]}]))
    run = tide.enqueue("w", webhooks=[{"url": endpoint.url + "/ok", "secret": "run-secret", "events": ["gate.*"]}])
    tide.work(burst=True, poll_interval=0.02, reconcile=False)  # runs until the gate suspends it
    assert tide.runs.get(run.id).status == "waiting"
    dispatcher = Dispatcher(tide.engine.database().pool.conninfo, poll_interval=0.02)  # type: ignore[arg-type]
    dispatcher.start()
    try:
        wait_until(lambda: len(endpoint.received) == 2, "both gate.created deliveries")
        created = [json.loads(body) for _, body, _ in endpoint.received]
        assert {m["type"] for m in created} == {"gate.created"}
        # the public gate of docs/http-api.md#channels: its token and resolve URL travel in gate.created, and only there
        assert {m["payload"]["gate"]["status"] for m in created} == {"pending"}
        assert all(m["payload"]["gate"]["resolveUrl"].endswith("/resolve") for m in created)
        assert all(m["deliveryId"].startswith("del_") and m["gateId"] for m in created)
        tokens = {m["payload"]["gate"]["resolveToken"] for m in created}
        assert len(tokens) == 1
        token = tokens.pop()
        secrets = sorted(s for _, body, h in endpoint.received for s in ("gate-secret", "run-secret")
                         if verify_webhook_signature(body, h["x-tidebase-signature"], s))
        assert secrets == ["gate-secret", "run-secret"]
        gate = tide.gates.list(run_id=run.id)[0]
        assert tide.gates.resolve(gate.id, "approved", actor="ext", token=token).decision == "approved"
        wait_until(lambda: len(endpoint.received) == 4, "gate.resolved to the gate channel and the run webhook")
    finally:
        dispatcher.stop()
    resolved = [json.loads(body) for _, body, _ in endpoint.received[2:]]
    assert [m["type"] for m in resolved] == ["gate.resolved", "gate.resolved"]
    assert all(m["payload"]["gate"]["resolveToken"] is None for m in resolved)
    assert {m["payload"]["gate"]["decision"] for m in resolved} == {"approved"}
    dump = db.execute("SELECT string_agg(payload::text, '') FROM tidebase.events").fetchone()
    gates = db.execute("SELECT string_agg(g::text, '') FROM tidebase.gates g").fetchone()
    assert dump is not None and gates is not None
    assert token not in (dump[0] or "") and token not in (gates[0] or "")
    tide.close()
