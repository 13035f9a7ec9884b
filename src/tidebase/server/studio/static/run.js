// A run's page, live. Events arrive over the Studio's SSE route (the server's stream code; the browser resumes
// with Last-Event-ID after a reconnect). Each event is appended to the log, and the parts of the page it concerns
// are re-rendered by the server and swapped in (debounced), keeping open folds and never touching a part the
// reader is typing in.

const DEBOUNCE_MS = 120;
const WEBHOOKS_EVERY_MS = 10000;
const MAX_LOG = 1000;

function partsFor(type) {
  if (type.startsWith("step.")) return ["steps", "header"];
  if (type.startsWith("state.") || type.startsWith("snapshot.")) return ["state"];
  if (type.startsWith("gate.")) return ["gates", "header"];
  if (type.startsWith("usage.")) return ["usage"];
  if (type.startsWith("run.")) return ["header", "steps", "gates", "webhooks"];
  return [];
}

function compact(value) {
  const text = JSON.stringify(value);
  return text.length > 160 ? `${text.slice(0, 159)}…` : text;
}

export function start() {
  const root = document.getElementById("run-root");
  if (!root) return;
  const base = document.body.dataset.base;
  const runUrl = `${base}/runs/${encodeURIComponent(root.dataset.runId)}`;
  const log = document.getElementById("event-log");
  const status = document.getElementById("stream-status");
  let last = Number(root.dataset.lastSeq || 0);
  const pending = new Set();
  let timer = null;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function append(event) {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    const li = document.createElement("li");
    li.dataset.seq = String(event.seq);
    li.className = "fresh";
    const seq = document.createElement("span");
    seq.className = "seq";
    seq.textContent = `#${event.seq}`;
    const time = document.createElement("time");
    time.dateTime = event.createdAt;
    time.textContent = (event.createdAt || "").slice(11, 19);
    const type = document.createElement("code");
    type.className = "etype";
    type.textContent = event.type;
    const payload = document.createElement("span");
    payload.className = "payload";
    payload.textContent = compact(event.payload);
    li.append(seq, " ", time, " ", type, " ", payload);
    log.append(li);
    while (log.children.length > MAX_LOG) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  async function refresh(name) {
    const el = root.querySelector(`[data-part="${name}"]`);
    if (!el) return;
    const active = document.activeElement;
    if (active && el.contains(active) && active.matches("input, textarea, select")) {
      schedule([name], 1000); // the reader is typing here: come back later
      return;
    }
    const url = `${runUrl}/part/${name}${name === "steps" ? location.search : ""}`;
    try {
      const resp = await fetch(url, { headers: { accept: "text/html" } });
      if (!resp.ok) return;
      const html = await resp.text();
      const open = new Set([...el.querySelectorAll("details[data-keep]")].filter((d) => d.open).map((d) => d.dataset.keep));
      const closed = new Set([...el.querySelectorAll("details[data-keep]")].filter((d) => !d.open).map((d) => d.dataset.keep));
      el.innerHTML = html;
      for (const d of el.querySelectorAll("details[data-keep]")) {
        if (open.has(d.dataset.keep)) d.open = true;
        if (closed.has(d.dataset.keep)) d.open = false;
      }
    } catch {
      schedule([name], 2000);
    }
  }

  async function flush() {
    timer = null;
    const names = [...pending];
    pending.clear();
    await Promise.all(names.map(refresh));
  }

  function schedule(names, delay = DEBOUNCE_MS) {
    for (const n of names) pending.add(n);
    if (timer === null) timer = setTimeout(flush, delay);
  }

  const source = new EventSource(`${runUrl}/events?after=${last}`);
  source.onopen = () => setStatus("live", "live");
  source.onerror = () => setStatus("reconnecting", "reconnecting…");
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.seq <= last) return;
    last = event.seq;
    append(event);
    schedule(partsFor(event.type));
  };
  setInterval(() => schedule(["webhooks"]), WEBHOOKS_EVERY_MS);
}
