"""Rows of the database rendered as the wire objects of docs/http-api.md#objects (camelCase, fixed timestamps).

Columns that a later migration adds (the queue fields) are read with `row.get(...)`, so a run renders the same
before and after that migration. Nothing here reads a channel secret, and only `delivery_body` reads a resolve token:
the one of a gate.created delivery body, which it is rendering. Deliveries and webhooks are rendered from the rows of
`tidebase.public_delivery`, which hold neither.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

Row = dict[str, Any]

# Library statuses that the wire does not know, shown as the wire status that means the same to a client.
_STATUS = {"waiting": "pending", "manual_review": "failed"}


def ts(value: datetime | str | None) -> str | None:
    """UTC ISO-8601 with exactly three fractional digits (truncated) and a Z. Accepts the ISO text of a timestamp
    read from a jsonb document, too."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def status(value: str) -> str:
    """The wire name of a run status."""
    return _STATUS.get(value, value)


def run(row: Row) -> dict[str, Any]:
    status_ = status(row["status"])
    return {
        "id": row["id"], "workflowName": row["workflow"], "input": row["input"], "metadata": row["metadata"] or {},
        "status": status_, "result": row["result"], "error": row["error"],
        "recoveryWebhook": row.get("recovery_webhook"),
        "leaseOwner": row["lease_owner"], "leaseExpiresAt": ts(row["lease_expires_at"]), "attempt": row["attempt"],
        "queue": row.get("queue"), "dedupeKey": row.get("dedupe_key"), "priority": row.get("priority") or 0,
        "runAt": ts(row.get("available_at", row.get("run_at"))), "maxAttempts": row.get("max_attempts") or 1,
        "deadlineAt": ts(row.get("deadline_at")), "cancelRequestedAt": ts(row.get("cancel_requested_at")),
        "cancelledAt": ts(row["cancelled_at"]), "cancelReason": row["cancel_reason"],
        "cancelActor": row["cancel_actor"], "failureClass": row["failure_class"],
        "createdAt": ts(row["created_at"]), "updatedAt": ts(row["updated_at"]),
        "completedAt": None if status_ == "failed" else ts(row["completed_at"]),
    }


def contract(value: dict[str, Any] | None) -> dict[str, Any]:
    c = value or {}
    return {
        "sideEffects": list(c.get("sideEffects") or []), "idempotencyKey": c.get("idempotencyKey"),
        "replay": c.get("replay") or "auto", "checkpointInvariant": c.get("checkpointInvariant"),
        "verifiedBy": c.get("verifiedBy"), "credentials": list(c.get("credentials") or []),
    }


def step(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"], "runId": row["run_id"], "name": row["key"], "inputHash": row["input_hash"],
        "input": row["input"] if row["input"] is not None else {}, "options": row.get("options") or {},
        "resumeContract": contract(row["contract"]), "status": row["status"], "output": row["output"],
        "error": row["error"], "resumeDecision": row["resume_decision"], "leaseOwner": row["lease_owner"],
        "leaseExpiresAt": ts(row["lease_expires_at"]), "attempt": row["attempt"], "startedAt": ts(row["started_at"]),
        "completedAt": ts(row["completed_at"]), "createdAt": ts(row["created_at"]), "updatedAt": ts(row["updated_at"]),
    }


def gate(row: Row, public_url: str, resolve_token: str | None = None) -> dict[str, Any]:
    channels = [{"type": c.get("type", "webhook"), "url": c.get("url"), "events": c.get("events") or [],
                 "hasSecret": bool(c.get("secret") or c.get("hasSecret"))}
                for c in (row["channels"] or []) if isinstance(c, dict)]
    return {
        "id": row["id"], "runId": row["run_id"], "name": row["name"], "prompt": row["prompt"], "data": row["data"],
        "status": row["status"], "decision": row["decision"], "actor": row["actor"],
        "decisionPayload": None if row["status"] == "pending" else row["payload"],
        "capability": row["capability"], "channels": channels,
        "resolveUrl": f"{public_url}/runs/{row['run_id']}/gates/{row['id']}/resolve",
        "resolveToken": resolve_token,
        "createdAt": ts(row["created_at"]), "updatedAt": ts(row["updated_at"]), "resolvedAt": ts(row["resolved_at"]),
    }


def state(row: Row, stream: str) -> dict[str, Any]:
    """The live State of a stream, from its newest version row."""
    return {"runId": row["run_id"], "stream": stream, "value": row["value"], "version": row["version"],
            "updatedAt": ts(row["created_at"])}


def version(row: Row, stream_id: str | None = None) -> dict[str, Any]:
    return {
        "id": row["id"], "streamId": stream_id or row.get("stream_id"), "stream": row["stream"],
        "runId": row["run_id"], "stepId": None, "version": row["version"], "value": row["value"],
        "patch": row["patch"], "label": row["label"], "reason": row["reason"], "importance": row["importance"],
        "metadata": row["metadata"] or {}, "createdBy": row["created_by"], "createdAt": ts(row["created_at"]),
    }


def stream(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"], "runId": row["run_id"], "name": row["name"], "targetType": row["target_type"],
        "targetId": row["target_id"], "currentVersion": row["current_version"],
        "currentValue": row["current_value"], "metadata": row["metadata"] or {},
        "createdAt": ts(row["created_at"]), "updatedAt": ts(row["updated_at"]),
    }


def edge(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "parentRunId": row["parent_run_id"], "childRunId": row["child_run_id"],
            "name": row["name"], "edgeType": row["edge_type"], "metadata": row["metadata"] or {},
            "createdAt": ts(row["created_at"])}


def usage(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"], "runId": row["run_id"], "stepId": row.get("step_id"), "kind": row["kind"],
        "provider": row["provider"], "model": row["model"], "label": row["label"], "unit": row["unit"],
        "quantity": row["quantity"], "inputTokens": row["input_tokens"], "outputTokens": row["output_tokens"],
        "totalTokens": row["total_tokens"], "costUsd": None if row["cost_usd"] is None else float(row["cost_usd"]),
        "metadata": row["metadata"] or {}, "createdAt": ts(row["created_at"]),
    }


def event(row: Row, public_url: str) -> dict[str, Any]:
    return {"id": row["id"], "runId": row["run_id"], "seq": row["seq"], "type": row["type"],
            "payload": payload(row["type"], row["payload"] or {}, public_url), "createdAt": ts(row["created_at"])}


def public_version(row: Row) -> dict[str, Any]:
    """The public form of a StateVersion, as events show it (no value, patch, metadata or author)."""
    return {"id": row["id"], "streamId": row.get("stream_id"), "stream": row["stream"], "runId": row["run_id"],
            "version": row["version"], "label": row["label"], "reason": row["reason"],
            "importance": row["importance"], "createdAt": ts(row["created_at"])}


def payload(type_: str, data: dict[str, Any], public_url: str) -> dict[str, Any]:
    """An event's payload in the public form of docs/http-api.md#event-types, from the stored one (which carries the
    objects it reports, see sql/functions/96_event_objects.sql). A payload stored without them is shown as stored."""
    if type_ == "run.created":
        return {**data, "channels": data.get("channels", [])}
    if type_ in ("gate.created", "gate.resolved") and isinstance(data.get("gate"), dict):
        return {"gate": gate(data["gate"], public_url)}
    if type_ in ("state.updated", "state.saved", "snapshot.created") and isinstance(data.get("stateVersion"), dict):
        out: dict[str, Any] = {"stateVersion": public_version(data["stateVersion"])}
        if type_ == "state.updated":
            out["value"] = data.get("value")
            if "patch" in data:
                out["patch"] = data["patch"]
        return out
    if type_ == "run.child.created" and isinstance(data.get("childRun"), dict) and data.get("edgeRecord"):
        return {"childRun": run(data["childRun"]), "edge": edge(data["edgeRecord"])}
    if type_ == "usage.recorded" and isinstance(data.get("usage"), dict):
        return {"usage": usage(data["usage"])}
    return data


def _outbox_status(row: Row) -> str:
    status: str = row["status"]
    return "failed" if status == "dead" else status


def recovery(row: Row) -> dict[str, Any]:
    """A RecoveryAttempt: one recovery (`run.resume`) or invoke (`run.invoke`) webhook, over all its tries."""
    pending = row["status"] == "pending"
    return {
        "id": row["public_id"], "runId": row["run_id"], "type": row["event_type"], "reason": row["reason"],
        "webhookUrl": row["url"], "status": _outbox_status(row), "httpStatus": row["http_status"],
        "responseBody": row["response_body"], "errorText": row["last_error"], "attempts": row["attempts"],
        "nextAttemptAt": ts(row["next_attempt_at"]) if pending else None, "createdAt": ts(row["created_at"]),
        "completedAt": ts(row["completed_at"]),
    }


def channel(hook: dict[str, Any], run_row: Row) -> dict[str, Any]:
    """A run's channel, from its `webhooks` entry: never the secret."""
    return {"id": hook.get("id"), "runId": run_row["id"], "type": "webhook", "config": {"url": hook.get("url")},
            "hasSecret": bool(hook.get("secret")), "events": list(hook.get("events") or []),
            "createdAt": ts(run_row["created_at"])}


def delivery(row: Row) -> dict[str, Any]:
    """A ChannelDelivery, from a row of `tidebase.public_delivery` (its `message` has the resolve token null already;
    a token field is nulled here too, so none is ever rendered). `channelId` is the run channel's id, null for an
    inline channel of a gate."""
    message = row["message"]
    payload = message.get("payload") if isinstance(message, dict) else None
    if isinstance(payload, dict):
        payload = _without_token(payload)
    pending = row["status"] == "pending"
    return {
        "id": row["public_id"], "runId": row["run_id"], "channelId": row["channel_id"], "gateId": row["gate_id"],
        "eventType": row["event_type"], "payload": payload, "status": _outbox_status(row),
        "httpStatus": row["http_status"], "responseBody": row["response_body"], "errorText": row["last_error"],
        "attempts": row["attempts"], "nextAttemptAt": ts(row["next_attempt_at"]) if pending else None,
        "createdAt": ts(row["created_at"]), "completedAt": ts(row["completed_at"]),
    }


def _without_token(payload: dict[str, Any]) -> dict[str, Any]:
    """A delivery payload with `resolveToken` null where a gate.created one carries it (as rendered, and before)."""
    out = {**payload, "resolveToken": None} if "resolveToken" in payload else payload
    gate_ = out.get("gate")
    if isinstance(gate_, dict) and "resolveToken" in gate_:
        out = {**out, "gate": {**gate_, "resolveToken": None}}
    return out


def queue_config(row: Row) -> dict[str, Any]:
    """A QueueConfig; a rate stored for another window is shown per minute."""
    rate = row["rate_limit"]
    window = row.get("rate_window_ms") or 60000
    return {"name": row.get("queue") or row.get("config_queue"), "concurrency": row["concurrency"],
            "ratePerMinute": None if rate is None else rate * 60000 // window, "invokeUrl": row["invoke_url"]}


def queue_stat(row: Row) -> dict[str, Any]:
    return {"name": row["name"], **{k: row[k] for k in ("queued", "running", "failed", "completed", "cancelled")},
            "config": None if row["config_queue"] is None else queue_config(row)}


def schedule(row: Row) -> dict[str, Any]:
    return {
        "name": row["name"], "cron": row["cron"], "workflowName": row["workflow"], "input": row["input"],
        "queue": row["queue"], "maxAttempts": row["max_attempts"], "enabled": row["enabled"],
        "nextRunAt": ts(row["next_fire_at"]), "lastEnqueuedAt": ts(row.get("last_enqueued_at")),
        "createdAt": ts(row["created_at"]), "updatedAt": ts(row["updated_at"]),
    }


def delivery_body(row: Row, public_url: str) -> str:
    """The body of a channel delivery (docs/http-api.md#channels), `{type, runId, gateId, deliveryId, payload}`,
    rendered from what its outbox row captured when the event committed (`source`): the run for run.*, the step for
    step.failed, the state for state.updated, the gate for gate.* (with the resolve token only in gate.created, taken
    from the body the row was queued with: the one place it is kept). Other types carry the event's public payload.
    Rendered once; every try sends these bytes."""
    type_ = row["event_type"]
    source = row["source"] or {}
    data = source.get("payload") or {}
    out: dict[str, Any]
    if type_ in ("run.completed", "run.cancelled") and source.get("run"):
        out = {"run": run(source["run"])}
    elif type_ == "run.failed" and source.get("run"):
        out = {"run": run(source["run"]), "error": source["run"].get("error")}
    elif type_ == "step.failed" and source.get("step"):
        out = {"step": step(source["step"]), "retryable": data.get("retryable"),
               "resumeDecision": data.get("resumeDecision"), "error": data.get("error")}
    elif type_ == "state.updated" and isinstance(data.get("stateVersion"), dict):
        v = data["stateVersion"]
        out = {"state": {"runId": v["run_id"], "stream": v["stream"], "value": data.get("value"),
                         "version": v["version"], "updatedAt": ts(v["created_at"])},
               "stateVersion": public_version(v)}
    elif type_ in ("gate.created", "gate.resolved") and source.get("gate"):
        token = _queued_token(row["body"]) if type_ == "gate.created" else None
        out = {"gate": gate(source["gate"], public_url, token)}
    else:
        out = payload(type_, data, public_url)
    return json.dumps({"type": type_, "runId": row["run_id"], "gateId": row["gate_id"],
                       "deliveryId": row["public_id"], "payload": out}, separators=(",", ":"), ensure_ascii=False)


def _queued_token(body: str) -> str | None:
    """The resolve token of a gate.created delivery as it was queued (under `payload` of its body), else None."""
    try:
        token = json.loads(body)["payload"]["resolveToken"]
    except (ValueError, KeyError, TypeError):
        return None
    return token if isinstance(token, str) else None
