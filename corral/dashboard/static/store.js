// The browser's copy of the cluster: the server's `snapshot`, then each `change` applied.
//
// Rows are arrays; `col[kind][name]` is a column's index (from the snapshot's
// `columns`). Each list keeps its ids sorted, re-sorted only when ids come or go:
// a row's sort key (its id; a task's job, slot and attempt) never changes.

const KEEP_EVENTS = 500;
const KEYED = ["nodes", "jobs", "tasks"];

function byText(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

export class Store {
  constructor() {
    this.col = {};
    this.maps = { nodes: new Map(), jobs: new Map(), tasks: new Map() };
    this.orders = {};
    this.masters = [];
    this.pending = [];
    this.events = [];
    this.summary = {};
    this.status = { version: 0, connected: false, problem: "connecting", at: 0 };
  }

  // The whole picture: every kind changed.
  load(message) {
    for (const [kind, names] of Object.entries(message.columns)) {
      this.col[kind] = Object.fromEntries(names.map((name, index) => [name, index]));
    }
    for (const kind of KEYED) {
      this.maps[kind] = new Map(message[kind].map((row) => [row[0], row]));
      this.orders[kind] = null;
    }
    this.masters = message.masters;
    this.pending = message.pending;
    this.summary = message.summary;
    this.events = message.events.slice(-KEEP_EVENTS);
    this.setStatus(message);
    return new Set([...KEYED, "masters", "pending", "events"]);
  }

  // One change; the kinds it touched.
  apply(message) {
    const touched = new Set();
    for (const [kind, rows] of Object.entries(message.upsert || {})) {
      const map = this.maps[kind];
      if (!map) continue;
      for (const row of rows) {
        if (!map.has(row[0])) this.orders[kind] = null;
        map.set(row[0], row);
      }
      touched.add(kind);
    }
    for (const [kind, ids] of Object.entries(message.remove || {})) {
      const map = this.maps[kind];
      if (!map) continue;
      for (const id of ids) map.delete(id);
      this.orders[kind] = null;
      touched.add(kind);
    }
    if (message.masters) {
      this.masters = message.masters;
      touched.add("masters");
    }
    if (message.pending) {
      this.pending = message.pending;
      touched.add("pending");
    }
    if (message.summary) this.summary = message.summary;
    if (message.events && message.events.length) {
      this.events = this.events.concat(message.events).slice(-KEEP_EVENTS);
      touched.add("events");
    }
    this.setStatus(message);
    return touched;
  }

  setStatus(message) {
    const { version, connected, problem, at } = message;
    this.status = { version, connected, problem, at };
  }

  // The rows of `kind` in display order.
  ordered(kind) {
    const map = this.maps[kind];
    if (!this.orders[kind]) this.orders[kind] = [...map.keys()].sort(this.comparator(kind));
    return this.orders[kind].map((id) => map.get(id));
  }

  comparator(kind) {
    if (kind !== "tasks") return byText;
    const c = this.col.tasks;
    const map = this.maps.tasks;
    return (a, b) => {
      const x = map.get(a);
      const y = map.get(b);
      return (
        byText(x[c.job], y[c.job]) || x[c.slot] - y[c.slot] || x[c.attempt] - y[c.attempt]
      );
    };
  }
}
