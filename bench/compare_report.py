"""Turns the raw results of `bench.compare` into the printed tables, the goal lines and the `--json` document.

Times in milliseconds. "median [min - max]" is over rounds (one value per round). Ratios are taken per round
between systems measured in that same round, then summarised the same way. Single-step p50/p99 pool the latencies
of every round.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .compare import CompareConfig, CompareResults
from .report import ms, spread_ms, spread_ratio, table
from .stats import Spread, percentile
from .venvs import LABELS, SYSTEMS
from .workloads import payload_bytes

GOAL_STEP_VS_FLOOR = 1.3
GOAL_FASTER_THAN_PEERS = 4.0
GOAL_THROUGHPUT_VS_FLOOR = 0.8
GOAL_RESUME_VS_SELECT = 3.0
MIN_STATEMENT_SHARE = 0.05  # statements per step below this are background noise (pollers), not the step's own


def ratios(values: Sequence[float], reference: Sequence[float]) -> Spread:
    return Spread.of([v / r for v, r in zip(values, reference, strict=True)])


@dataclass(frozen=True)
class SystemSummary:
    """Everything the report prints for one system."""

    per_step: Spread
    p50: float
    p99: float
    cpu_per_step: float
    vs_floor: Spread
    vs_tidebase: Spread
    throughput: Spread
    throughput_vs_floor: Spread
    resume: dict[int, Spread]
    entered: dict[int, float]
    resume_vs_select: dict[int, Spread]

    def as_json(self) -> dict[str, Any]:
        return {
            "per_step_s": vars(self.per_step), "p50_s": self.p50, "p99_s": self.p99,
            "cpu_per_step_s": self.cpu_per_step, "per_step_vs_floor": vars(self.vs_floor),
            "per_step_vs_tidebase": vars(self.vs_tidebase), "steps_per_s": vars(self.throughput),
            "steps_per_s_vs_floor": vars(self.throughput_vs_floor),
            "resume_s": {str(k): vars(v) for k, v in self.resume.items()},
            "resume_entered_s": {str(k): v for k, v in self.entered.items()},
            "resume_vs_select": {str(k): vars(v) for k, v in self.resume_vs_select.items()},
        }


def per_step(rounds: Sequence[dict[str, Any]]) -> list[float]:
    return [r["wall_s"] / r["steps"] for r in rounds]


def rate(throughput: Sequence[dict[str, Any]]) -> list[float]:
    return [t["steps"] / t["duration_s"] for t in throughput]


def resume_of(rounds: Sequence[dict[str, Any]], k: int, key: str = "resume_s") -> list[float]:
    return [r["resume"][str(k)][key] for r in rounds]


def summarize(results: CompareResults, config: CompareConfig) -> dict[str, SystemSummary]:
    floor, tide = results.rounds["floor"], results.rounds["tidebase"]
    floor_rate = rate(results.throughput["floor"])
    summaries = {}
    for name in config.systems:
        rounds, throughput = results.rounds[name], results.throughput[name]
        latencies = [lat for r in rounds for lat in r["latencies_s"]]
        summaries[name] = SystemSummary(
            per_step=Spread.of(per_step(rounds)),
            p50=percentile(latencies, 50),
            p99=percentile(latencies, 99),
            cpu_per_step=Spread.of([r["cpu_s"] / r["steps"] for r in rounds]).median,
            vs_floor=ratios(per_step(rounds), per_step(floor)),
            vs_tidebase=ratios(per_step(rounds), per_step(tide)),
            throughput=Spread.of(rate(throughput)),
            throughput_vs_floor=ratios(rate(throughput), floor_rate),
            resume={k: Spread.of(resume_of(rounds, k)) for k in config.resume_ks},
            entered={k: Spread.of(resume_of(rounds, k, "entered_s")).median for k in config.resume_ks},
            resume_vs_select={k: ratios(resume_of(rounds, k), resume_of(floor, k)) for k in config.resume_ks},
        )
    return summaries


# -- round trips and statements ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CountSummary:
    """Round trips and statements per executed step and per replayed step, from the difference between two sizes."""

    rt_per_step: float
    statements_per_step: float
    syncs_per_step: float
    rt_per_replayed: float
    statements_per_replayed: float
    rt_resume_small: int
    statement_mix: dict[str, float]

    def as_json(self) -> dict[str, Any]:
        return vars(self)


def _per(big: dict[str, Any], small: dict[str, Any], size: int, key: str) -> float:
    return (big[key] - small[key]) / size


def _total(region: dict[str, Any]) -> int:
    return sum(region["statements"].values())


def count_summary(counts: dict[str, Any], config: CompareConfig) -> CountSummary:
    ex_small, ex_big = counts["executed"][str(config.count_small)], counts["executed"][str(config.count_large)]
    k_small, k_big = min(config.resume_ks), max(config.resume_ks)
    re_small, re_big = counts["replayed"][str(k_small)], counts["replayed"][str(k_big)]
    steps, replayed = config.count_large - config.count_small, k_big - k_small
    labels = set(ex_big["statements"]) | set(ex_small["statements"])
    mix = {label: (ex_big["statements"].get(label, 0) - ex_small["statements"].get(label, 0)) / steps
           for label in labels}
    return CountSummary(
        rt_per_step=_per(ex_big, ex_small, steps, "round_trips"),
        statements_per_step=(_total(ex_big) - _total(ex_small)) / steps,
        syncs_per_step=_per(ex_big, ex_small, steps, "syncs"),
        rt_per_replayed=_per(re_big, re_small, replayed, "round_trips"),
        statements_per_replayed=(_total(re_big) - _total(re_small)) / replayed,
        rt_resume_small=re_small["round_trips"],
        statement_mix={k: v for k, v in sorted(mix.items(), key=lambda kv: -kv[1]) if v >= MIN_STATEMENT_SHARE},
    )


# -- printing ----------------------------------------------------------------------------------------------------------


def label(name: str, config: CompareConfig) -> str:
    """The row's label; the upstream server's row also names where it was measured (host and port only)."""
    if name == "upstream" and config.upstream_host:
        return f"{LABELS[name]} @ {config.upstream_host}"
    return LABELS[name]


def versions_line(results: CompareResults) -> list[str]:
    lines = []
    for name, versions in results.versions.items():
        packages = ", ".join(f"{pkg} {ver}" for pkg, ver in versions.items() if pkg != "python")
        lines.append(f"  {name}: {packages} (Python {versions.get('python', '?')})")
    return lines


def header(command: str, facts: dict[str, Any], config: CompareConfig, database: str,
           results: CompareResults) -> list[str]:
    lines = [
        "Tidebase compared with the alternatives, on one PostgreSQL",
        f"command:  {command}",
        f"machine:  {facts['cpu_count']} CPUs ({facts.get('cpu_model', '?')}), {facts.get('memory', '?')} RAM, "
        f"{facts['platform']}",
        f"server:   PostgreSQL {facts['server_version']}, fsync={facts['fsync']}, "
        f"synchronous_commit={facts['synchronous_commit']}, wal_sync_method={facts['wal_sync_method']}, "
        f"shared_buffers={facts['shared_buffers']}; {facts.get('server_kind', '')}",
        f"load:     {_load(facts.get('load_start'))} (1/5/15-minute load averages before the run; well above 0, "
        "other processes were competing for the CPUs)",
        f"database: {database} (created for this run, shared by every system, dropped at exit)",
        f"workload: {config.rounds} interleaved rounds of {', '.join(config.systems)}; step output "
        f"{payload_bytes()} bytes of JSON",
        "systems:",
        *versions_line(results),
    ]
    if "upstream" in config.systems:
        lines.append(f"  upstream: the server at {config.upstream_host} ($TIDEBASE_URL), driven over HTTP by the SDK; "
                     "it writes to its own database, not the one above")
    lines += [f"skipped:  {name}: {why}" for name, why in config.skipped]
    if config.smoke:
        if "upstream" in config.systems:
            lines.append("SMOKE RUN: floor, Tidebase and the upstream server only (of the peers' virtualenvs, only the "
                         "upstream SDK's is installed); tiny sizes, numbers are not meaningful")
        else:
            lines.append("SMOKE RUN: floor and Tidebase only (the peers' virtualenvs are not installed); tiny sizes, "
                         "numbers are not meaningful")
    return lines


def _load(values: Sequence[float] | None) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "?"


def executed_section(rows: dict[str, SystemSummary], config: CompareConfig) -> list[str]:
    body = [["", "per step ms: median [min - max]", "p50 ms", "p99 ms", "CPU/step ms", "vs floor", "vs tidebase"]]
    for name, s in rows.items():
        body.append([label(name, config), spread_ms(s.per_step), ms(s.p50), ms(s.p99), ms(s.cpu_per_step),
                     spread_ratio(s.vs_floor), spread_ratio(s.vs_tidebase)])
    return ["", f"(a) Executed step, nothing but checkpointing: {config.runs} runs x {config.steps} steps per system "
            "per round", *table(body)]


def throughput_section(results: CompareResults, config: CompareConfig) -> list[str]:
    body = [["", "steps/s: median [min - max]", "vs floor", "CPUs busy", "machine CPU/step ms",
             "workers' CPU/step ms"]]
    floor = rate(results.throughput["floor"])
    for name in (*config.systems, *config.diagnostics):
        runs = results.throughput[name]
        steps = Spread.of(rate(runs))
        busy = [t["cpu_busy"] for t in runs if t.get("cpu_busy") is not None]
        machine = [t["cpu_busy"] * t["cpu_count"] * t["duration_s"] / t["steps"] for t in runs
                   if t.get("cpu_busy") is not None and t["steps"]]
        workers = [t["workers_cpu_s"] / t["steps"] for t in runs if t["steps"]]
        body.append([label(name, config), f"{steps.median:.0f} [{steps.low:.0f} - {steps.high:.0f}]",
                     spread_ratio(ratios(rate(runs), floor)),
                     f"{Spread.of(busy).median:.0%}" if busy else "?",
                     ms(Spread.of(machine).median) if machine else "?", ms(Spread.of(workers).median)])
    return ["", f"(b) {config.workers} concurrent worker processes, {config.throughput_s:g} s, runs of "
            f"{config.throughput_steps} steps", *table(body)]


def resume_section(rows: dict[str, SystemSummary], config: CompareConfig) -> list[str]:
    lines = ["", "(c) Resume of a failed run whose first k steps completed: from the resuming call until the workflow "
             "reaches step k+1"]
    for k in config.resume_ks:
        body = [[f"k = {k}", "ms: median [min - max]", "code entered ms", "vs SELECT"]]
        for name, s in rows.items():
            if name != "floor":
                body.append([label(name, config), spread_ms(s.resume[k]), ms(s.entered[k]),
                             spread_ratio(s.resume_vs_select[k])])
        reference = f"reference: raw SELECT of {k} ~200-byte rows, warm connection"
        body.append([reference, spread_ms(rows["floor"].resume[k]), "", ""])
        lines += table(body)
    return lines


def not_applicable(counts: dict[str, Any]) -> str | None:
    """Why a system's SQL could not be counted (a system reached over HTTP), or None."""
    reason = counts.get("not_applicable")
    return str(reason) if reason else None


def http_summary(counts: dict[str, Any], config: CompareConfig) -> CountSummary | None:
    """The HTTP requests of an HTTP system's counting pass, summarised like round trips, when they were counted."""
    return count_summary(counts["http"], config) if counts.get("http") else None


def count_section(results: dict[str, dict[str, Any]], config: CompareConfig) -> list[str]:
    k_small, k_big = min(config.resume_ks), max(config.resume_ks)
    body = [["", "round trips/executed step", "statements/executed step", "round trips/replayed step",
             f"round trips to resume k={k_small}"]]
    counts = {name: count_summary(c, config) for name, c in results.items() if not not_applicable(c)}
    for name in results:
        if name not in counts:
            body.append([label(name, config), "n/a", "n/a", "n/a", "n/a"])
            continue
        c = counts[name]
        replayed = "-" if name == "floor" else f"{c.rt_per_replayed:.2f}"
        total = "-" if name == "floor" else str(c.rt_resume_small)
        body.append([label(name, config), f"{c.rt_per_step:.2f}", f"{c.statements_per_step:.2f}", replayed, total])
    lines = ["", "(d) SQL round trips and statements, counted at a relay in front of PostgreSQL (not timed)",
             f"    from runs of {config.count_small} and {config.count_large} steps and resumes at k={k_small} and "
             f"k={k_big}: the differences divided by the size differences", *table(body)]
    for name, c_raw in results.items():
        if reason := not_applicable(c_raw):
            lines.append(f"  {name}: n/a: {reason}")
            http = http_summary(c_raw, config)
            if http is None:
                lines.append(f"    {c_raw.get('http_not_counted', 'HTTP requests not counted')}")
            else:
                lines.append(f"    HTTP requests instead, counted at a relay in front of the server: "
                             f"{http.rt_per_step:.2f} per executed step, {http.rt_per_replayed:.2f} per replayed "
                             f"step, {http.rt_resume_small} to resume k={k_small}")
    lines.append("  statements per executed step:")
    for name, c in counts.items():
        mix = "; ".join(f"{v:.2f} x {k}" for k, v in c.statement_mix.items())
        lines.append(f"    {name}: {mix}")
    return lines


def goal(met: bool, text: str) -> str:
    return f"  {'MET   ' if met else 'MISSED'} {text}"


def goals_section(rows: dict[str, SystemSummary], config: CompareConfig) -> list[str]:
    tide, k = rows["tidebase"], min(config.resume_ks)
    lines = ["", "Goals (medians over rounds of per-round ratios)"]
    ratio = tide.vs_floor.median
    lines.append(goal(ratio <= GOAL_STEP_VS_FLOOR, f"tidebase executed step <= {GOAL_STEP_VS_FLOOR}x the floor: "
                      f"{ratio:.2f}x"))
    for name, s in rows.items():
        if SYSTEMS[name].is_peer and not SYSTEMS[name].over_http:
            faster = s.vs_tidebase.median
            lines.append(goal(faster >= GOAL_FASTER_THAN_PEERS, f"tidebase executed step >= "
                              f"{GOAL_FASTER_THAN_PEERS:g}x faster than {name}: {faster:.2f}x"))
    share = tide.throughput_vs_floor.median
    lines.append(goal(share >= GOAL_THROUGHPUT_VS_FLOOR, f"tidebase {config.workers}-worker throughput >= "
                      f"{GOAL_THROUGHPUT_VS_FLOOR}x the floor's: {share:.2f}x"))
    resume = tide.resume_vs_select[k].median
    lines.append(goal(resume <= GOAL_RESUME_VS_SELECT, f"tidebase {k}-step resume <= {GOAL_RESUME_VS_SELECT:g}x "
                      f"one raw SELECT of {k} rows: {resume:.2f}x ({ms(tide.resume[k].median)} ms vs "
                      f"{ms(rows['floor'].resume[k].median)} ms)"))
    return lines


def render(command: str, facts: dict[str, Any], config: CompareConfig, database: str,
           results: CompareResults) -> str:
    """The full printed report."""
    rows = summarize(results, config)
    lines = header(command, facts, config, database, results)
    lines += executed_section(rows, config)
    lines += throughput_section(results, config)
    lines += resume_section(rows, config)
    if results.counts:
        lines += count_section(results.counts, config)
    lines += goals_section(rows, config)
    return "\n".join(lines)


def count_json(counts: dict[str, Any], config: CompareConfig) -> dict[str, Any]:
    """One system's count summary for `--json`: SQL figures, or why they do not apply and the HTTP figures."""
    if reason := not_applicable(counts):
        http = http_summary(counts, config)
        return {"not_applicable": reason, "http_requests": http.as_json() if http else None}
    return count_summary(counts, config).as_json()


def write_json(path: Path, command: str, facts: dict[str, Any], config: CompareConfig,
               results: CompareResults) -> None:
    """Writes every raw number (per round; every single-step latency, in seconds) and the summaries."""
    document = {
        "command": command,
        "facts": facts,
        "config": config.as_json(),
        "goals": {"step_vs_floor_max": GOAL_STEP_VS_FLOOR, "faster_than_peers_min": GOAL_FASTER_THAN_PEERS,
                  "throughput_vs_floor_min": GOAL_THROUGHPUT_VS_FLOOR, "resume_vs_select_max": GOAL_RESUME_VS_SELECT},
        "summary": {name: s.as_json() for name, s in summarize(results, config).items()},
        "diagnostics": {name: {"steps_per_s": vars(Spread.of(rate(results.throughput[name]))),
                               "steps_per_s_vs_floor": vars(ratios(rate(results.throughput[name]),
                                                                   rate(results.throughput["floor"])))}
                        for name in config.diagnostics},
        "counts": {name: count_json(c, config) for name, c in results.counts.items()},
        "results": results.as_json(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
