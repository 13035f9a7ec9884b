"""`python -m bench compare`: Tidebase side by side with DBOS Transact, LangGraph's PostgresSaver and the raw floor.

Every system runs as a subprocess (`bench/peers/run_<system>.py`, the peers from their own virtualenvs, see
`bench.venvs`) against the same database on the same PostgreSQL server, and reports JSON. Each round runs, for
every system in turn (floor, tidebase, dbos, langgraph):

1. `round` task: warm-up, then `runs` x `steps` executed steps (per-step wall time, single-step latencies), then a
   resume of a failed run for each size in `resume_ks` (the floor: one raw SELECT of that many rows);
2. then, for every system in turn, the `throughput` task: `workers` processes for `throughput_s` seconds (plus,
   as a diagnostic row, the floor's INSERT with a `pg_notify`, see `bench/peers/run_floor_notify.py`).

So all systems go through the same drift of the machine, and ratios are taken between neighbours of one round.
After the rounds, a `count` task per system runs the same operations through a relay that counts round trips and
statements (not timed).

The upstream Tidebase server joins as the system `upstream` when `$TIDEBASE_URL` names it (`$TIDEBASE_API_KEY` too
if it needs a key): its script drives that server with the published SDK over HTTP, so its steps are written to
whatever database that server uses, not to the benchmark's. Without `$TIDEBASE_URL` it is skipped, and the report
says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import psutil
from psycopg.conninfo import conninfo_to_dict

from .venvs import DIAGNOSTICS, SYSTEMS, SystemSpec

Log = Callable[[str], None]
TASK_TIMEOUT_S = 900
UPSTREAM_URL_ENV = "TIDEBASE_URL"


def log_to_stderr(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class CompareConfig:
    """What to measure (see the module docstring); `systems` always starts with the floor and Tidebase."""

    systems: tuple[str, ...] = ("floor", "tidebase", "dbos", "langgraph")
    rounds: int = 7
    runs: int = 5
    steps: int = 400
    warmup_steps: int = 50
    workers: int = 8
    throughput_s: float = 4.0
    throughput_steps: int = 100
    resume_ks: tuple[int, ...] = (100, 1000)
    count_small: int = 50
    count_large: int = 250
    diagnostics: tuple[str, ...] = ("floor_notify",)
    smoke: bool = False
    upstream_host: str | None = None  # host[:port] of $TIDEBASE_URL when `upstream` runs (never the URL: no secrets)
    skipped: tuple[tuple[str, str], ...] = ()  # (system, why it did not run)

    @classmethod
    def smoke_config(cls) -> CompareConfig:
        """What CI runs: the floor and Tidebase only (no peer virtualenv is installed), 1 round, a few steps."""
        return cls(systems=("floor", "tidebase"), rounds=1, runs=2, steps=20, warmup_steps=10, workers=2,
                   throughput_s=0.5, throughput_steps=10, resume_ks=(10, 50), count_small=5, count_large=15,
                   diagnostics=(), smoke=True)

    def round_params(self) -> dict[str, Any]:
        return {"warmup_steps": self.warmup_steps, "runs": self.runs, "steps": self.steps,
                "resume_ks": list(self.resume_ks)}

    def throughput_params(self) -> dict[str, Any]:
        return {"warmup_steps": min(self.warmup_steps, 20), "workers": self.workers, "steps": self.throughput_steps,
                "duration_s": self.throughput_s}

    def count_params(self) -> dict[str, Any]:
        return {"warmup_steps": min(self.warmup_steps, 20), "small": self.count_small, "large": self.count_large,
                "ks": [min(self.resume_ks), max(self.resume_ks)]}

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompareResults:
    """Raw task outputs: per system, one `round` and one `throughput` result per round, and one `count` result."""

    rounds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    throughput: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, str]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def as_url(dsn: str) -> str:
    """A `postgresql://` URL for a libpq DSN (key=value or URL): DBOS (SQLAlchemy) accepts only URLs."""
    params = {k: v for k, v in conninfo_to_dict(dsn).items() if v is not None}
    user, password = params.pop("user", ""), params.pop("password", None)
    host, port, dbname = params.pop("host", ""), params.pop("port", ""), params.pop("dbname", "")
    auth = quote(str(user), safe="") + (":" + quote(str(password), safe="") if password else "")
    if str(host).startswith("/"):  # a Unix-socket folder goes in the query string
        params["host"], host = host, ""
    netloc = f"{auth + '@' if auth else ''}{host}{':' + str(port) if port and host else ''}"
    if port and not host:
        params["port"] = port
    query = urlencode({k: str(v) for k, v in params.items()})
    return f"postgresql://{netloc}/{quote(str(dbname), safe='')}" + (f"?{query}" if query else "")


def machine_details() -> dict[str, str]:
    """CPU model and memory size, for the report header."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu_model": model, "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB"}


class TaskFailed(RuntimeError):
    """A system's script failed; the message carries the end of its stderr."""


def run_task(python: Path, spec: SystemSpec, task: str, url: str, params: dict[str, Any]) -> dict[str, Any]:
    """Runs one task of one system's script and returns its JSON result."""
    command = [str(python), str(spec.script_path), task, "--dsn", url, "--params", json.dumps(params)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=TASK_TIMEOUT_S)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-30:])
        raise TaskFailed(f"{spec.name} {task} exited with {done.returncode}:\n{tail}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return dict(json.loads(lines[-1]))


def run_compare(url: str, config: CompareConfig, pythons: dict[str, Path], *, count: bool = True,
                log: Log = log_to_stderr) -> CompareResults:
    """Runs every round, then the counting pass, against the database at `url`; returns the raw results.
    `pythons` maps every system (and diagnostic) name to the interpreter that runs its script."""
    specs = [SYSTEMS[name] for name in config.systems]
    concurrent = specs + [DIAGNOSTICS[name] for name in config.diagnostics]
    results = CompareResults()
    for spec in specs:
        log(f"setup: {spec.name}")
        results.versions[spec.name] = run_task(pythons[spec.name], spec, "setup", url, {})["versions"]
    for number in range(1, config.rounds + 1):
        for spec in specs:
            log(f"round {number}/{config.rounds}: {spec.name}: executed steps and resume")
            output = run_task(pythons[spec.name], spec, "round", url, config.round_params())
            results.rounds.setdefault(spec.name, []).append(output)
        for spec in concurrent:
            log(f"round {number}/{config.rounds}: {spec.name}: {config.workers} concurrent workers")
            output = run_task(pythons[spec.name], spec, "throughput", url, config.throughput_params())
            results.throughput.setdefault(spec.name, []).append(output)
    if count:
        for spec in specs:
            log(f"counting round trips and statements: {spec.name}")
            results.counts[spec.name] = run_task(pythons[spec.name], spec, "count", url, config.count_params())
    return results


def parse_sizes(text: str) -> tuple[int, ...]:
    """`100,1000` -> (100, 1000): at least two distinct positive sizes, ascending."""
    sizes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    if len(sizes) < 2 or sizes[0] < 1:
        raise ValueError("give at least two distinct positive sizes, e.g. 100,1000")
    return sizes


def url_host(url: str) -> str:
    """`host[:port]` of an http(s) URL: what the report may show of it (no user, password, path or query)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"${UPSTREAM_URL_ENV} must be an http:// or https:// URL of the upstream server")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}" if parts.port else host


def include_upstream(config: CompareConfig, requested: bool,
                     environ: Mapping[str, str] = os.environ) -> CompareConfig:
    """`config` with the upstream server added when it was requested and `$TIDEBASE_URL` is set; requested but
    unset, it is recorded as skipped (with the reason) instead. Raises ValueError for a URL that is not http(s)."""
    systems = tuple(name for name in config.systems if name != "upstream")
    if not requested:
        return replace(config, systems=systems)
    url = environ.get(UPSTREAM_URL_ENV, "").strip()
    if not url:
        why = (f"${UPSTREAM_URL_ENV} is not set; set it to the upstream server's URL (and $TIDEBASE_API_KEY if the "
               "server needs one) to include it")
        return replace(config, systems=systems, skipped=(*config.skipped, ("upstream", why)))
    return replace(config, systems=(*systems, "upstream"), upstream_host=url_host(url))


def parse_systems(text: str) -> tuple[str, ...]:
    """`dbos,langgraph` -> ("floor", "tidebase", "dbos", "langgraph"): the floor and Tidebase always run."""
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    unknown = chosen - set(SYSTEMS)
    if unknown:
        raise ValueError(f"unknown system(s) {sorted(unknown)}; known: {', '.join(SYSTEMS)}")
    return tuple(name for name in SYSTEMS if name in chosen | {"floor", "tidebase"})


def select(systems: Sequence[str], config: CompareConfig) -> CompareConfig:
    """`config` restricted to `systems` (in the canonical order)."""
    fields = config.as_json() | {"systems": tuple(systems)}
    return CompareConfig(**fields)
