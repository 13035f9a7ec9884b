// The runs list, live: once a second (every 5 s while the tab is hidden) ask /pulse for the status, attempt and
// current step of the rows on screen, and update those cells in place. A newer run matching the filters shows a
// link instead of moving rows under the reader's cursor. Counts by status are refreshed every fifth poll.

const POLL_MS = 1000;
const HIDDEN_POLL_MS = 5000;

export function start() {
  const table = document.getElementById("runs");
  if (!table) return;
  const base = document.body.dataset.base;
  let polls = 0;

  function rows() {
    return [...table.querySelectorAll("tbody tr[data-run]")];
  }

  function setStep(cell, step) {
    cell.replaceChildren();
    if (!step) {
      const dash = document.createElement("span");
      dash.className = "muted";
      dash.textContent = "—";
      cell.append(dash);
      return;
    }
    const key = document.createElement("code");
    key.textContent = step.key;
    const state = document.createElement("span");
    state.className = "muted";
    state.textContent = step.state;
    cell.append(key, " ", state);
  }

  function apply(data) {
    const byId = new Map(rows().map((tr) => [tr.dataset.run, tr]));
    for (const run of data.runs) {
      const tr = byId.get(run.id);
      if (!tr) continue;
      const badge = tr.querySelector('[data-field="status"] .badge');
      if (badge && badge.dataset.status !== run.status) {
        badge.dataset.status = run.status;
        badge.textContent = run.status.replace("_", " ");
      }
      tr.querySelector('[data-field="attempt"]').textContent = String(run.attempt);
      setStep(tr.querySelector('[data-field="step"]'), run.step);
    }
    const first = rows()[0];
    const newer = document.getElementById("newer");
    if (newer && table.dataset.firstPage === "yes" && data.newest && (!first || data.newest !== first.dataset.run)) {
      newer.hidden = false;
    }
    if (data.counts) {
      let total = 0;
      for (const [status, n] of Object.entries(data.counts)) {
        total += n;
        const cell = document.querySelector(`[data-count="${status}"]`);
        if (cell) cell.textContent = n.toLocaleString("en-US");
      }
      const all = document.querySelector('[data-count="all"]');
      if (all) all.textContent = total.toLocaleString("en-US");
    }
  }

  async function tick() {
    const params = new URLSearchParams({
      ids: rows().map((tr) => tr.dataset.run).join(","),
      status: table.dataset.status,
      workflow: table.dataset.workflow,
    });
    if (polls % 5 === 0) params.set("counts", "1");
    polls += 1;
    try {
      const resp = await fetch(`${base}/pulse?${params}`, { headers: { accept: "application/json" } });
      if (resp.status === 401) return; // signed out: stop polling
      if (resp.ok) apply(await resp.json());
    } catch {
      // the server is restarting or the network is down: the next tick tries again
    }
    setTimeout(tick, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
  }

  setTimeout(tick, POLL_MS);
}
