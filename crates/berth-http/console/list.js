// The overview (`#/`): counts, two charts and the workspace table. The table is paged (50 per
// request, "Load more" follows `X-Next-Cursor`) and never re-read as a whole: a live frame about
// a listed workspace re-reads that one workspace and patches its row in place.

import { request, get } from "./api.js";
import * as live from "./live.js";
import { heartbeatChart, histogram, ageClass } from "./chart.js";
import { h, put, badge, say, alertBox, statusBox, fmtDuration, toMs, busy, uid } from "./dom.js";

const PAGE = 50;
// Frames that can change a row (activity and A2A traffic do not).
const ROW_EVENTS = /^(WORKSPACE_|AGENT_CARD_UPDATED$|TASK_UPDATED$)/;
const NEW_EVENTS = new Set(["WORKSPACE_PROVISIONING", "WORKSPACE_AWAITING_AGENT"]);

export function render(root) {
  const pageOpened = Date.now();
  const rows = new Map(); // id → {ws, tr}
  const firstStatus = new Map(); // id → status when first listed
  const liveHb = new Map(); // id → ms of a WORKSPACE_HEARTBEAT seen live
  const provSeen = new Map(); // id → ms of the first WORKSPACE_PROVISIONING of an unlisted id
  const sampled = new Set();
  const samples = []; // create → online, ms
  const pending = new Map(); // id → {dirty}
  let cursor = null;
  let loading = true;
  let drawQueued = false;

  // ---- skeleton ----
  const counts = h("p", { id: "counts", class: "counts" }, "Loading…");
  const hbCapId = uid("cap");
  const histCapId = uid("cap");
  const hbBox = h("div", { class: "chart-wrap" });
  const histBox = h("div", { class: "chart-wrap" });
  const hbCap = h("figcaption", { id: hbCapId });
  const histCap = h("figcaption", { id: histCapId });
  const tbody = h("tbody");
  const table = h(
    "table",
    { id: "workspaces", class: "grid" },
    h("caption", { class: "visually-hidden" }, "Workspaces (live)"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Name", "Status", "Runtime", "Tier", "Last heartbeat", "Tasks", "Notes"].map((t) => h("th", { scope: "col" }, t)),
      ),
    ),
    tbody,
  );
  const tableWrap = h("div", { class: "table-wrap", role: "region", "aria-label": "Workspace table", tabindex: "0" }, table);
  const empty = h(
    "p",
    { id: "empty", class: "empty", hidden: true },
    "No workspaces yet — ",
    h("a", { href: "#/create" }, "create one"),
    ".",
  );
  const more = h("button", { type: "button", id: "load-more", hidden: true }, "Load more");
  const refresh = h("button", { type: "button", id: "refresh", class: "secondary" }, "Refresh");
  const err = alertBox("list-error");
  const liveNote = statusBox("list-live");

  put(
    root,
    h("h1", { class: "page-title", tabindex: "-1" }, "Workspaces"),
    h(
      "section",
      { class: "glance", "aria-labelledby": "glance-h" },
      h("h2", { id: "glance-h" }, "At a glance"),
      counts,
      h(
        "div",
        { class: "charts" },
        h("figure", { class: "chart-box" }, hbBox, hbCap),
        h("figure", { class: "chart-box" }, histBox, histCap),
      ),
    ),
    h(
      "section",
      { "aria-labelledby": "list-h" },
      h(
        "div",
        { class: "bar-row" },
        h("h2", { id: "list-h" }, "All workspaces"),
        h("a", { id: "create-link", class: "button", href: "#/create" }, "Create workspace"),
        refresh,
      ),
      err,
      liveNote,
      empty,
      tableWrap,
      more,
    ),
  );

  // ---- rows ----
  const hbAt = (ws) => {
    const t = toMs(ws.last_heartbeat_at);
    const l = liveHb.get(ws.id);
    if (Number.isFinite(t) && l) return Math.max(t, l);
    return Number.isFinite(t) ? t : l ?? NaN;
  };

  function ageCell(ws) {
    const t = hbAt(ws);
    if (!Number.isFinite(t)) return h("td", { class: "hb-age" }, "—");
    const age = Date.now() - t;
    return h("td", { class: `hb-age age-${ageClass(age)}` }, `${fmtDuration(age)} ago`);
  }

  function notes(ws) {
    if (ws.status === "failed") {
      const msg = ws.last_error || ws.error || ws.last_sample_error;
      return [h("strong", {}, ws.failure_code || "failed"), msg ? `: ${msg}` : ""];
    }
    const out = [];
    if (ws.parent_id) out.push("child of ", h("a", { href: `#/workspaces/${ws.parent_id}` }, ws.parent_id.slice(0, 8)));
    if (ws.url) out.push(out.length ? " · " : "", h("span", { class: "mono" }, ws.url));
    return out;
  }

  function fill(tr, ws) {
    put(
      tr,
      h("th", { scope: "row" }, h("a", { href: `#/workspaces/${ws.id}` }, ws.name || ws.id)),
      h("td", { class: "status" }, badge(ws.status)),
      h("td", {}, ws.runtime || "—"),
      h("td", { class: "num" }, ws.tier ?? "—"),
      ageCell(ws),
      h("td", { class: "num" }, ws.active_tasks ?? 0),
      h("td", { class: "notes" }, notes(ws)),
    );
  }

  function upsert(ws, atTop) {
    const r = rows.get(ws.id);
    if (r) {
      r.ws = ws;
      fill(r.tr, ws);
      return;
    }
    const tr = h("tr", { dataset: { id: ws.id } });
    fill(tr, ws);
    if (atTop) {
      tr.classList.add("is-new");
      tbody.prepend(tr);
    } else tbody.append(tr);
    rows.set(ws.id, { ws, tr });
    if (!firstStatus.has(ws.id)) firstStatus.set(ws.id, ws.status);
  }

  function remove(id) {
    const r = rows.get(id);
    if (!r) return;
    r.tr.remove();
    rows.delete(id);
  }

  // ---- summary and charts ----
  function draw() {
    drawQueued = false;
    const list = [...rows.values()].map((r) => r.ws);
    const by = {};
    for (const ws of list) by[ws.status] = (by[ws.status] || 0) + 1;
    const parts = Object.entries(by)
      .sort((a, b) => b[1] - a[1])
      .map(([s, n]) => `${n} ${s}`);
    if (loading && !list.length) counts.textContent = "Loading…";
    else
      counts.textContent =
        `${list.length} workspace${list.length === 1 ? "" : "s"} listed` +
        (cursor ? " (more to load)" : "") +
        (parts.length ? `: ${parts.join(", ")}.` : ".");
    empty.hidden = loading || list.length > 0;
    tableWrap.hidden = !list.length;

    const now = Date.now();
    const hb = [];
    for (const ws of list) {
      const t = hbAt(ws);
      if (Number.isFinite(t)) hb.push({ name: ws.name || ws.id, ageMs: Math.max(0, now - t) });
    }
    const missing = list.length - hb.length;
    if (hb.length) put(hbBox, heartbeatChart(hb, hbCapId));
    else put(hbBox, h("p", { class: "empty" }, "No heartbeat times known for the listed workspaces."));
    hbCap.textContent =
      `Heartbeat age (now − last heartbeat) of ${hb.length > 20 ? "the 20 stalest of " : ""}${hb.length} listed ` +
      `workspace${hb.length === 1 ? "" : "s"}` +
      (missing ? `; ${missing} without a known heartbeat left out` : "") +
      ". Green: under 1 min, amber: under 5 min, red: older.";

    if (samples.length) put(histBox, histogram(samples, histCapId));
    else put(histBox, h("p", { class: "empty" }, "No workspace has come online since this page was opened."));
    const med = samples.length ? [...samples].sort((a, b) => a - b)[Math.floor(samples.length / 2)] : NaN;
    histCap.textContent =
      `Create → online time of the ${samples.length} workspace${samples.length === 1 ? "" : "s"} seen coming ` +
      `online while this page is open (first start only; restarts and workspaces already online are not counted)` +
      (samples.length ? `; median ${fmtDuration(med)}.` : ".");
  }

  const scheduleDraw = () => {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(draw);
  };

  function maybeSample(id, at) {
    if (sampled.has(id)) return;
    const ws = rows.get(id)?.ws;
    let start = NaN;
    const created = toMs(ws?.created_at);
    if (Number.isFinite(created)) {
      const limit = ws.provision_timeout_ms || 600000;
      const first = created >= pageOpened - 1000 || (firstStatus.get(id) === "provisioning" && at - created < limit);
      if (first) start = created;
    }
    if (!Number.isFinite(start) && provSeen.has(id)) start = provSeen.get(id);
    if (!Number.isFinite(start) || at < start) return;
    sampled.add(id);
    samples.push(at - start);
    scheduleDraw();
  }

  // ---- loading ----
  async function loadPage() {
    const q = `/workspaces?limit=${PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const r = await request("GET", q);
    cursor = r.headers.get("X-Next-Cursor") || null;
    for (const ws of Array.isArray(r.data) ? r.data : []) upsert(ws, false);
    more.hidden = !cursor;
  }

  async function reload() {
    loading = true;
    cursor = null;
    rows.clear();
    tbody.replaceChildren();
    say(err, "");
    say(liveNote, "");
    scheduleDraw();
    try {
      await loadPage();
    } catch (e) {
      say(err, e, "error");
    } finally {
      loading = false;
      scheduleDraw();
    }
  }

  // Re-reads one workspace, at most one request in flight per id (frames arriving meanwhile
  // coalesce into one more read).
  async function refetch(id, addIfNew) {
    const p = pending.get(id);
    if (p) {
      p.dirty = true;
      return;
    }
    const state = { dirty: false };
    pending.set(id, state);
    try {
      do {
        state.dirty = false;
        try {
          const ws = await get(`/workspaces/${encodeURIComponent(id)}`);
          if (rows.has(id) || addIfNew) upsert(ws, !rows.has(id));
        } catch (e) {
          if (e.status === 410 || e.status === 404) remove(id);
        }
      } while (state.dirty);
    } finally {
      pending.delete(id);
      scheduleDraw();
    }
  }

  function onFrame(f) {
    const id = f.workspace_id;
    if (!id) return;
    if (f.event === "WORKSPACE_HEARTBEAT") {
      liveHb.set(id, f.timestamp);
      const r = rows.get(id);
      if (r) fill(r.tr, r.ws);
      scheduleDraw();
      return;
    }
    if (!ROW_EVENTS.test(f.event)) return;
    if (f.event === "WORKSPACE_PROVISIONING" && !rows.has(id) && !provSeen.has(id)) provSeen.set(id, f.timestamp);
    if (f.event === "WORKSPACE_ONLINE") maybeSample(id, f.timestamp);
    if (f.event === "WORKSPACE_REMOVED") {
      remove(id);
      scheduleDraw();
      return;
    }
    if (rows.has(id)) refetch(id, false);
    else if (NEW_EVENTS.has(f.event)) refetch(id, true);
  }

  more.addEventListener("click", () =>
    busy(more, async () => {
      say(err, "");
      try {
        await loadPage();
      } catch (e) {
        say(err, e, "error");
      }
      scheduleDraw();
    }),
  );
  refresh.addEventListener("click", () => busy(refresh, reload));

  const unsub = live.subscribe(onFrame);
  const unstate = live.onState((s, d) => {
    if (s === "open" && d && d.resumed)
      say(liveNote, "Live updates reconnected: rows may have missed changes while disconnected — use Refresh.", "info");
  });
  // Ages move with the clock: redraw locally (no request) every 5 s.
  const tick = setInterval(() => {
    for (const r of rows.values()) {
      const cell = r.tr.querySelector(".hb-age");
      if (cell) cell.replaceWith(ageCell(r.ws));
    }
    scheduleDraw();
  }, 5000);

  reload();

  return () => {
    unsub();
    unstate();
    clearInterval(tick);
  };
}
