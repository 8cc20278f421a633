// The dashboard page: one EventSource on /api/stream, the store it feeds, and the tables.
//
// The server sends `snapshot` (everything) when the stream opens, then `change`
// messages, a few a second at most. Each message re-renders only the visible page of
// the lists it touched, once per animation frame. The browser never asks the master
// anything; when the stream ends (dropped, or with --login every minute, so the login is
// checked again), EventSource reconnects and a new snapshot replaces everything. An
// answer that is not a stream (401, 503) ends EventSource for good: then connect again
// ourselves, waiting longer each time.

import { Store } from "./store.js";
import { ago, tables } from "./views.js";

const store = new Store();
const dirty = new Set();
let views = null;
let frame = 0;
let streamOpen = false;

const sections = Object.fromEntries(
  ["masters", "nodes", "jobs", "pending", "tasks", "events"].map((id) => [
    id,
    document.getElementById(id),
  ]),
);
const link = document.getElementById("link");
const summary = document.getElementById("summary");
const updated = document.getElementById("updated");

function schedule(kinds) {
  for (const kind of kinds) dirty.add(kind);
  if (!frame) frame = requestAnimationFrame(draw);
}

function draw() {
  frame = 0;
  if (!views) return;
  for (const kind of dirty) views[kind]?.render();
  dirty.clear();
  drawHeader();
}

function drawHeader() {
  const { connected, problem, version, at } = store.status;
  if (!streamOpen) {
    setLink("reconnecting…", "bad");
  } else if (!connected) {
    setLink(`cluster: ${problem || "not connected"}`, "warn");
  } else {
    setLink("live", "ok");
  }
  const parts = [];
  for (const [kind, counts] of Object.entries(store.summary || {})) {
    const words = Object.entries(counts)
      .sort((a, b) => b[1] - a[1])
      .map(([name, count]) => `${count} ${name}`);
    parts.push(`${kind}: ${words.join(", ") || "none"}`);
  }
  summary.textContent = parts.join("  ·  ");
  updated.textContent = version ? `changed ${ago(at)} ago` : "";
}

function setLink(text, level) {
  link.textContent = text;
  link.className = `pill ${level}`;
}

const RETRY_FIRST_MS = 2000;
const RETRY_MAX_MS = 60000;
let retryMs = RETRY_FIRST_MS;

function connect() {
  const source = new EventSource("/api/stream");
  source.addEventListener("open", () => {
    streamOpen = true;
    retryMs = RETRY_FIRST_MS;
    schedule([]);
  });
  source.addEventListener("error", () => {
    streamOpen = false;
    schedule([]);
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    }
  });
  source.addEventListener("snapshot", (event) => {
    const kinds = store.load(JSON.parse(event.data));
    if (!views) views = tables(store, sections);
    streamOpen = true;
    schedule(kinds);
  });
  source.addEventListener("change", (event) => {
    schedule(store.apply(JSON.parse(event.data)));
  });
}

// Ages ("12s ago") move on without any change: redraw the visible pages now and then.
setInterval(() => schedule(["tasks"]), 5000);
setInterval(() => schedule([]), 1000);
connect();
