// The dashboard's tables: which columns each list shows, and how a cell is drawn.

import { PagedTable, el } from "./table.js";

const STATE_CLASS = /^[a-z][a-z-]{0,31}$/;
const EVENT_KINDS = ["task", "job", "node", "leader", "refused"];
const ROLLING = new Set(["updating", "rolling-back"]);

export function size(bytes) {
  const units = ["B", "K", "M", "G", "T"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${Number(value.toFixed(value < 10 && unit ? 1 : 0))}${units[unit]}`;
}

export function cpus(value) {
  return `${Number(value.toFixed(2))}`;
}

export function ago(seconds) {
  if (!seconds) return "-";
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

// A state word, coloured by its class (`s-running`); an odd word gets no class.
function state(td, text, word = text) {
  td.textContent = text;
  if (STATE_CLASS.test(word)) td.classList.add(`s-${word}`);
}

function bar(td, used, total, label) {
  const track = el("div", "bar");
  const fill = el("span");
  const share = total > 0 ? Math.min(1, used / total) : 0;
  fill.style.width = `${(share * 100).toFixed(1)}%`; // CSSOM, not markup: CSP allows it
  if (share > 0.9) fill.className = "full";
  track.append(fill);
  td.append(track, el("small", null, label));
}

function text(name) {
  return (c) => (td, row) => {
    td.textContent = row[c[name]] ?? "";
  };
}

function column(title, className, render) {
  return { title, className, render };
}

export function tables(store, sections) {
  const c = store.col;
  const built = {};
  const cols = (kind, make) => make(c[kind]); // the column indices of `kind`, by name

  built.masters = new PagedTable(sections.masters, {
    paged: false,
    source: () => store.masters,
    key: (row) => row[0],
    columns: cols("masters", (m) => [
      column("name", "id", text("name")(m)),
      column("role", "state", (td, row) => state(td, row[m.role])),
      column("epoch", "num", text("epoch")(m)),
      column("lag", "num", (td, row) => (td.textContent = row[m.lag] ?? "-")),
      column("seen", "num", (td, row) => (td.textContent = `${row[m.seen_ago]}s ago`)),
      column("broker", "dim", text("broker")(m)),
    ]),
  });

  built.nodes = new PagedTable(sections.nodes, {
    source: () => store.ordered("nodes"),
    key: (row) => row[0],
    columns: cols("nodes", (n) => [
      column("node", "id", text("id")(n)),
      column("state", "state", (td, row) => {
        const sched = row[n.scheduling];
        state(td, sched ? `${row[n.state]}, ${sched}` : row[n.state], row[n.state]);
      }),
      column("cpu", "meter", (td, row) =>
        bar(td, row[n.cpu_used], row[n.cpu_total], `${cpus(row[n.cpu_used])}/${cpus(row[n.cpu_total])}`),
      ),
      column("memory", "meter", (td, row) =>
        bar(td, row[n.memory_used], row[n.memory_total], `${size(row[n.memory_used])}/${size(row[n.memory_total])}`),
      ),
      column("tasks", "num", text("tasks")(n)),
      column("subnet", "addr", text("subnet")(n)),
      column("labels, reason", "reason", (td, row) => {
        td.textContent = [row[n.labels], row[n.reason]].filter(Boolean).join(" · ");
      }),
    ]),
  });

  built.jobs = new PagedTable(sections.jobs, {
    source: () => store.ordered("jobs"),
    key: (row) => row[0],
    columns: cols("jobs", (j) => [
      column("job", "id", text("id")(j)),
      column("state", "state", (td, row) => state(td, row[j.state])),
      column("replicas", "num", (td, row) => {
        const up = row[j.kind] === "service" ? row[j.healthy] : row[j.running];
        td.textContent = `${up}/${row[j.replicas]}`;
        td.title = row[j.kind] === "service" ? "healthy / desired" : "running / desired";
      }),
      column("version", "update", (td, row) => {
        const rollout = row[j.rollout];
        td.textContent = `v${row[j.version]}`;
        if (rollout && ROLLING.has(rollout[0])) {
          const [what, done, total, from, to] = rollout;
          bar(td, done, total, `${what} ${done}/${total} v${from}→v${to}`);
        }
      }),
      column("kind", "dim", text("kind")(j)),
      column("image", "image", (td, row) => {
        td.textContent = row[j.image];
        td.title = row[j.image];
      }),
      column("reason", "reason", text("reason")(j)),
    ]),
  });

  built.pending = new PagedTable(sections.pending, {
    paged: false,
    source: () => store.pending,
    columns: cols("pending", (p) => [
      column("tasks", "num", text("count")(p)),
      column("waiting because", "reason", text("reason")(p)),
      column("jobs", "id", (td, row) => (td.textContent = row[p.jobs].join(", "))),
    ]),
  });

  built.tasks = new PagedTable(sections.tasks, {
    source: () => store.ordered("tasks"),
    key: (row) => row[0],
    attrs: (tr, row) => {
      tr.dataset.job = row[c.tasks.job];
      tr.dataset.node = row[c.tasks.node];
    },
    columns: cols("tasks", (t) => [
      column("task", "id", text("id")(t)),
      column("node", "node", (td, row) => (td.textContent = row[t.node] || "-")),
      column("address", "addr", text("address")(t)),
      column("state", "state", (td, row) => {
        state(td, row[t.state]);
        const health = row[t.health];
        if (health) td.append(" ", el("small", STATE_CLASS.test(health) ? `s-${health}` : "", health));
        if (row[t.restarts]) {
          td.append(" ", el("small", "restarts", `↻${row[t.restarts]}`));
          td.lastChild.title = "failures of its slot in a row";
        }
        const job = store.maps.jobs.get(row[t.job]);
        if (job && job[c.jobs.version] !== row[t.version]) {
          td.append(" ", el("small", "old", `v${row[t.version]}`));
          td.lastChild.title = `runs version ${row[t.version]} of its job`;
        }
      }),
      column("updated", "num", (td, row) => (td.textContent = ago(row[t.updated_at]))),
      column("reason", "reason", (td, row) => {
        const code = row[t.exit_code];
        td.textContent = [code === null ? "" : `exit ${code}`, row[t.reason]].filter(Boolean).join(": ");
      }),
    ]),
  });

  const kinds = new Set(EVENT_KINDS);
  const toggles = EVENT_KINDS.map((kind) => {
    const label = el("label", "toggle");
    const box = el("input");
    box.type = "checkbox";
    box.checked = true;
    box.dataset.kind = kind;
    box.addEventListener("change", () => {
      if (box.checked) kinds.add(kind);
      else kinds.delete(kind);
      built.events.page = 0;
      built.events.render();
    });
    label.append(box, kind);
    return label;
  });
  built.events = new PagedTable(sections.events, {
    source: () => store.events.slice().reverse(),
    accept: (row) => kinds.has(row[c.events.kind]) || !EVENT_KINDS.includes(row[c.events.kind]),
    controls: toggles,
    columns: cols("events", (e) => [
      column("time", "num", (td, row) => (td.textContent = clock(row[e.at]))),
      column("kind", "dim", text("kind")(e)),
      column("subject", "id", text("subject")(e)),
      column("state", "state", (td, row) => state(td, row[e.state])),
      column("node", "node", text("node")(e)),
      column("", "reason", text("text")(e)),
    ]),
  });
  return built;
}
