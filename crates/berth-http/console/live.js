// The one `/ws` socket of the console, shared by the pages that listen. It opens when the first
// listener subscribes, closes when the last leaves, and reconnects with exponential backoff
// (0.5 s doubling to 30 s, with jitter) when the server closes it (1013 for a slow client, a
// restart, a network drop).

import { normalizeFrame, wsBase } from "./api.js";

const listeners = new Set();
const stateListeners = new Set();
let ws = null;
let timer = null;
let attempt = 0;
let state = "closed"; // "connecting" | "open" | "reconnecting" | "closed"
let everOpened = false;

function setState(s, detail) {
  state = s;
  for (const fn of stateListeners) fn(s, detail);
}

function connect() {
  if (ws || timer) return;
  setState(everOpened || attempt ? "reconnecting" : "connecting");
  let sock;
  try {
    sock = new WebSocket(`${wsBase()}/ws`);
  } catch {
    schedule();
    return;
  }
  ws = sock;
  sock.addEventListener("open", () => {
    const resumed = everOpened;
    attempt = 0;
    everOpened = true;
    setState("open", { resumed });
  });
  sock.addEventListener("message", (e) => {
    if (typeof e.data !== "string") return;
    let f;
    try {
      f = normalizeFrame(JSON.parse(e.data));
    } catch {
      return;
    }
    if (!f) return;
    for (const fn of listeners) {
      try {
        fn(f);
      } catch (err) {
        console.error("live listener failed", err);
      }
    }
  });
  sock.addEventListener("close", () => {
    if (ws !== sock) return;
    ws = null;
    if (listeners.size) schedule();
    else setState("closed");
  });
}

function schedule() {
  const delay = Math.min(30000, 500 * 2 ** attempt) + Math.random() * 300;
  attempt += 1;
  setState("reconnecting", { delay });
  timer = setTimeout(() => {
    timer = null;
    if (listeners.size) connect();
  }, delay);
}

function stop() {
  clearTimeout(timer);
  timer = null;
  attempt = 0;
  everOpened = false;
  if (ws) {
    const s = ws;
    ws = null;
    s.close(1000);
  }
  setState("closed");
}

/** Calls `fn(frame)` for every live frame; returns the unsubscribe function. */
export function subscribe(fn) {
  listeners.add(fn);
  connect();
  return () => {
    listeners.delete(fn);
    if (!listeners.size) stop();
  };
}

/** Calls `fn(state, detail)` on every change of the socket's state (and once now). */
export function onState(fn) {
  stateListeners.add(fn);
  fn(state);
  return () => stateListeners.delete(fn);
}

/** Closes the socket and forgets every listener (sign-out). */
export function closeAll() {
  listeners.clear();
  stop();
}
