// One workspace's page (`#/workspaces/<id>`): its header (kept current by its own SSE event
// stream), lifecycle actions, an A2A message box, the events timeline, the activity log, and the
// panels of panels.js (the A2A queue, tokens, secrets, config, files) and terminal.js.

import { get, request, normalizeFrame } from "./api.js";
import {
  h, put, say, alertBox, statusBox, section, field, busy, attempt, timeEl, ago, brief, fmtDuration, toMs,
} from "./dom.js";
import { queuePanel, tokensPanel, secretsPanel, configPanel, filesPanel } from "./panels.js";
import { terminalPanel } from "./terminal.js";

const MAX_EVENTS = 200;
const MAX_ACTIVITY = 200;
const HEADER_EVENTS = /^(WORKSPACE_|AGENT_CARD_UPDATED$|TASK_UPDATED$)/;

/** The text of an A2A reply (`result.parts`, the task's status message, its artifacts). */
export function replyText(answer) {
  const r = answer && answer.result;
  if (!r || typeof r !== "object") return null;
  const out = [];
  const take = (parts) => {
    for (const p of Array.isArray(parts) ? parts : []) if (p && typeof p.text === "string") out.push(p.text);
  };
  take(r.parts);
  take(r.status && r.status.message && r.status.message.parts);
  for (const a of Array.isArray(r.artifacts) ? r.artifacts : []) take(a && a.parts);
  return out.length ? out.join("\n") : null;
}

/** What a lifecycle action's answer means, as a sentence (the status below follows live). */
export function actionSentence(action, d) {
  const n = (count, one) => `${count} workspace${count === 1 ? "" : "s"}${count > 1 ? ` (${one} and its sub-workspaces)` : ""}`;
  switch (`${action}:${d.status}`) {
    case "restart:provisioning":
      return "Restart requested: the agent is being started again; the status above follows it.";
    case "restart:noop":
      return `Nothing to restart: ${d.message || `a ${d.runtime || "external"} agent runs elsewhere`}.`;
    case "pause:paused":
      return `Paused ${n(d.paused_count ?? 1, "this one")}: the agent is stopped until you resume it.`;
    case "resume:provisioning":
      return `Resuming ${n(d.resumed_count ?? 1, "this one")}: the agent is being started.`;
    case "hibernate:hibernated":
      return "Hibernated: the agent is stopped and wakes on its next message or on Wake.";
    case "wake:provisioning":
      return "Waking: the agent is being started.";
    default: {
      const { status, ...rest } = d;
      return `${action[0].toUpperCase()}${action.slice(1)}: ${status || "done"}${Object.keys(rest).length ? ` ${brief(rest, 200)}` : ""}.`;
    }
  }
}

export function render(root, ctx, id) {
  const admin = ctx.session.principal === "admin";
  const base = `/workspaces/${encodeURIComponent(id)}`;
  const cleanups = [];
  let ws = null;
  let removed = null; // the 410 body once the workspace is gone
  let failureMsg = null; // from a WORKSPACE_PROVISION_FAILED payload
  let liveHb = NaN;

  // ---- header ----
  const nameEl = h("h1", { id: "ws-name", class: "page-title", tabindex: "-1" }, "Loading…");
  const statusEl = h("span", { id: "ws-status", class: "badge" }, "…");
  const failure = h("div", { id: "ws-failure", class: "failure", role: "alert", hidden: true });
  const gone = h("p", { id: "ws-removed", class: "note is-error", hidden: true });
  const facts = h("dl", { class: "facts" });
  const headErr = alertBox("ws-error");

  function renderHeader() {
    const status = removed ? "removed" : ws ? ws.status : "unknown";
    statusEl.textContent = status;
    statusEl.className = `badge st-${status.replace(/[^a-z_]/g, "")}`;
    if (!ws) return;
    nameEl.textContent = ws.name || id;
    document.title = `${ws.name || id} — berth`;
    if (status === "failed") {
      const msg = ws.last_error || ws.error || ws.last_sample_error || failureMsg;
      failure.hidden = false;
      put(
        failure,
        h("strong", {}, "Failed: "),
        h("code", { class: "failure-code" }, ws.failure_code || "UNKNOWN"),
        h("span", { class: "failure-msg" }, ` — ${msg || "no message recorded (see the events below)"}`),
      );
    } else failure.hidden = true;
    gone.hidden = !removed;
    if (removed) put(gone, "This workspace was removed", removed.removed_at ? [" at ", timeEl(removed.removed_at)] : "", removed.hint ? ` — ${removed.hint}` : ".");
    const hb = Number.isFinite(toMs(ws.last_heartbeat_at)) ? toMs(ws.last_heartbeat_at) : liveHb;
    const fact = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
    put(
      facts,
      fact("Runtime", ws.runtime || "—"),
      fact("Tier", ws.tier ?? "—"),
      fact("URL", ws.url ? h("span", { class: "mono" }, ws.url) : "—"),
      fact("Parent", ws.parent_id ? (admin ? h("a", { href: `#/workspaces/${ws.parent_id}` }, ws.parent_id) : ws.parent_id) : "—"),
      fact("Last heartbeat", Number.isFinite(hb) ? h("span", { class: "hb-age" }, ago(hb)) : "—"),
      fact("Active tasks", ws.active_tasks ?? 0),
      fact("Uptime", Number.isFinite(ws.uptime_seconds) && ws.uptime_seconds > 0 ? fmtDuration(ws.uptime_seconds * 1000) : "—"),
      ws.role ? fact("Role", ws.role) : null,
      fact("ID", h("span", { class: "mono" }, ws.id || id)),
    );
  }

  let inflight = null;
  let dirty = false;
  async function refreshWs() {
    if (inflight) {
      dirty = true;
      return inflight;
    }
    inflight = (async () => {
      do {
        dirty = false;
        try {
          ws = await get(base);
          removed = null;
          say(headErr, "");
        } catch (e) {
          if (e.status === 410) {
            removed = e.body || {};
            if (!ws) ws = { id, name: id, status: "removed" };
          } else say(headErr, e, "error");
        }
        renderHeader();
      } while (dirty);
    })();
    try {
      await inflight;
    } finally {
      inflight = null;
    }
  }

  // ---- lifecycle ----
  const result = h("p", { id: "action-result", class: "note", role: "alert", hidden: true });
  const actionBtn = (name, label, path) => {
    const b = h("button", { type: "button", id: `action-${name}`, class: "secondary" }, label);
    b.addEventListener("click", () =>
      attempt(b, result, async () => {
        say(result, `${label}…`, "info");
        try {
          say(result, actionSentence(name, (await request("POST", base + path, { body: {} })).data || {}), "ok");
        } finally {
          refreshWs();
        }
      }),
    );
    return b;
  };
  const purge = h("input", { type: "checkbox", id: "delete-purge" });
  const delBtn = h("button", { type: "button", id: "action-delete", class: "danger" }, "Delete…");
  const confirmBtn = h("button", { type: "button", id: "delete-confirm", class: "danger" }, "Confirm delete");
  const cancelBtn = h("button", { type: "button", class: "secondary" }, "Cancel");
  const dlgText = h("p");
  // Non-modal (show(), not showModal()): the purge checkbox beside the button stays usable
  // while the dialog asks; Escape and Cancel close it.
  const dialog = h(
    "dialog",
    { id: "delete-dialog", class: "confirm", "aria-labelledby": "delete-dialog-h" },
    h("h4", { id: "delete-dialog-h" }, "Delete this workspace?"),
    dlgText,
    h("div", { class: "actions" }, confirmBtn, cancelBtn),
  );
  const dlgSay = () => {
    dlgText.textContent =
      `“${ws ? ws.name : id}” and all its sub-workspaces will be removed` +
      (purge.checked ? ", and purged: every row, file and backend resource deleted for good." : ".");
  };
  purge.addEventListener("change", dlgSay);
  delBtn.addEventListener("click", () => {
    dlgSay();
    if (!dialog.open) dialog.show();
    confirmBtn.focus();
  });
  const closeDialog = () => {
    if (dialog.open) dialog.close();
    delBtn.focus();
  };
  cancelBtn.addEventListener("click", closeDialog);
  dialog.addEventListener("keydown", (e) => {
    if (e.key === "Escape") closeDialog();
  });
  confirmBtn.addEventListener("click", () =>
    attempt([confirmBtn, delBtn], result, async () => {
      try {
        const d = (await request("DELETE", `${base}?confirm=true${purge.checked ? "&purge=true" : ""}`)).data || {};
        say(result, `Delete: ${d.status || "removed"}${d.cascade_deleted ? ` (with ${d.cascade_deleted} sub-workspace(s))` : ""}.`, "ok");
      } finally {
        if (dialog.open) dialog.close();
        refreshWs();
      }
    }),
  );
  const lifecycle = section(
    "Lifecycle",
    "sec-lifecycle",
    h(
      "div",
      { class: "actions" },
      actionBtn("restart", "Restart", "/restart"),
      actionBtn("pause", "Pause", "/pause"),
      actionBtn("resume", "Resume", "/resume"),
      actionBtn("hibernate", "Hibernate", "/hibernate"),
      actionBtn("wake", "Wake", "/wake"),
    ),
    admin
      ? h(
          "div",
          { class: "actions danger-zone" },
          delBtn,
          h("label", { class: "check", for: "delete-purge" }, purge, " Purge (delete rows, files and backend resources)"),
        )
      : null,
    admin ? dialog : null,
    result,
  );

  // ---- message ----
  let rpcId = 0;
  const msgInput = h("input", { id: "message-input", type: "text", autocomplete: "off", required: true });
  const msgSend = h("button", { type: "submit", id: "message-send" }, "Send");
  const reply = h("pre", { id: "message-reply", class: "reply", "aria-live": "polite" });
  const replyBox = h("div", { hidden: true }, h("h4", { class: "sub" }, "Reply"), reply);
  const msgErr = alertBox("message-error");
  const msgForm = h("form", { class: "inline-form" }, field("Message", msgInput), msgSend);
  msgForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = msgInput.value;
    if (!text.trim()) return;
    say(msgErr, "");
    attempt(msgSend, msgErr, async () => {
      const body = {
        jsonrpc: "2.0",
        id: ++rpcId,
        method: "message/send",
        params: { message: { role: "user", messageId: crypto.randomUUID(), parts: [{ kind: "text", text }] } },
      };
      const r = await request("POST", `${base}/a2a`, { body });
      const d = r.data;
      msgInput.value = "";
      if (d && d.error) return say(msgErr, `JSON-RPC error ${d.error.code ?? ""}: ${d.error.message || brief(d.error)}`, "error");
      replyBox.hidden = false;
      if (r.status === 202) queue.poke();
      reply.textContent =
        r.status === 202 && d && d.queued
          ? `Queued (${d.queue_id}, queue depth ${d.queue_depth}): ${d.message}`
          : replyText(d) ?? JSON.stringify(d, null, 2);
    });
  });
  const message = section("Send a message", "sec-message", msgForm, msgErr, replyBox);

  // ---- events ----
  const events = h("ol", { id: "events", class: "events", "aria-live": "off" });
  const evEmpty = h("p", { class: "empty" }, "No events yet — they appear here as they happen.");
  const evNote = statusBox("events-note");
  const seen = new Set();
  function addEvent(f) {
    if (f.seq !== null) {
      if (seen.has(f.seq)) return;
      seen.add(f.seq);
    }
    const li = h(
      "li",
      { dataset: { seq: f.seq ?? "" } },
      timeEl(f.timestamp),
      " ",
      h("strong", { class: "ev-name" }, f.event),
      " ",
      h("code", { class: "ev-payload" }, brief(f.payload, 200)),
    );
    // Newest first, by seq when known.
    let before = null;
    if (f.seq !== null)
      for (const el of events.children) {
        const s = Number(el.dataset.seq);
        if (el.dataset.seq !== "" && s < f.seq) {
          before = el;
          break;
        }
      }
    else before = events.firstChild;
    events.insertBefore(li, before);
    while (events.children.length > MAX_EVENTS) events.lastChild.remove();
    evEmpty.hidden = true;
  }
  const eventsSec = section(
    "Events",
    "sec-events",
    h("p", { class: "hint" }, admin ? "Live, newest first; the latest 50 from the log below them." : "Live, newest first (the history needs the admin token)."),
    evNote,
    evEmpty,
    events,
  );

  // ---- activity ----
  const actBody = h("tbody");
  const actEmpty = h("p", { class: "empty", hidden: true }, "No activity yet.");
  const actErr = alertBox("activity-error");
  const actRefresh = h("button", { type: "button", class: "secondary" }, "Refresh");
  const actIds = new Set();
  function actRow(a) {
    return h(
      "tr",
      { dataset: { activityId: a.id || "" } },
      h("td", {}, timeEl(a.created_at)),
      h("td", {}, a.activity_type || "—"),
      h("td", {}, a.method || "—"),
      h("td", {}, a.status || "—"),
      h("td", { class: "wrap" }, a.summary || a.error_detail || ""),
      h("td", { class: "num" }, a.duration_ms != null ? `${a.duration_ms} ms` : "—"),
    );
  }
  function prependActivity(a) {
    if (!a || !a.activity_type || (a.id && actIds.has(a.id))) return;
    if (a.id) actIds.add(a.id);
    actBody.prepend(actRow(a));
    while (actBody.children.length > MAX_ACTIVITY) actBody.lastChild.remove();
    actEmpty.hidden = true;
    actWrap.hidden = false;
  }
  async function loadActivity() {
    say(actErr, "");
    try {
      const list = await get(`${base}/activity?limit=50`);
      actBody.replaceChildren();
      actIds.clear();
      for (const a of [...(list || [])].reverse()) prependActivity(a);
      actEmpty.hidden = actBody.children.length > 0;
      actWrap.hidden = !actEmpty.hidden;
    } catch (e) {
      say(actErr, e, "error");
    }
  }
  actRefresh.addEventListener("click", () => busy(actRefresh, loadActivity));
  const actWrap = h(
    "div",
    { class: "table-wrap", role: "region", "aria-label": "Activity", tabindex: "0", hidden: true },
    h(
      "table",
      { id: "activity", class: "grid" },
      h("thead", {}, h("tr", {}, ["Time", "Type", "Method", "Status", "Summary", "Duration"].map((t) => h("th", { scope: "col" }, t)))),
      actBody,
    ),
  );
  const activity = section(
    "Activity",
    "sec-activity",
    h("div", { class: "bar-row" }, h("p", { class: "hint" }, "The latest 50 rows, newest first."), actRefresh),
    actErr,
    actEmpty,
    actWrap,
  );

  // ---- panels ----
  const queue = queuePanel(base);
  const tokens = tokensPanel(base);
  const secrets = secretsPanel(base);
  const config = configPanel(base);
  const files = filesPanel(base);
  const term = terminalPanel(id, base);
  cleanups.push(queue.cleanup, tokens.cleanup, term.cleanup);

  const toc = h(
    "nav",
    { class: "toc", "aria-label": "Sections" },
    h(
      "ul",
      {},
      [
        ["sec-lifecycle", "Lifecycle"], ["sec-message", "Message"], ["sec-events", "Events"], ["sec-activity", "Activity"],
        ["sec-queue", "Queue"], ["sec-tokens", "Tokens"], ["sec-secrets", "Secrets"], ["sec-config", "Config"], ["sec-files", "Files"], ["sec-terminal", "Terminal"],
      ].map(([href, t]) => h("li", {}, h("a", { href: `#${href}`, dataset: { jump: href } }, t))),
    ),
  );
  // The router owns the hash: in-page links scroll and focus instead of navigating.
  toc.addEventListener("click", (e) => {
    const a = e.target.closest("a[data-jump]");
    if (!a) return;
    e.preventDefault();
    const target = document.getElementById(a.dataset.jump);
    if (target) {
      target.setAttribute("tabindex", "-1");
      target.focus();
      target.scrollIntoView({ block: "start" });
    }
  });

  put(
    root,
    admin ? h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Workspaces"), " / ") : null,
    h(
      "header",
      { class: "ws-head card" },
      nameEl,
      h("p", { class: "status-line" }, "Status: ", statusEl),
      failure,
      gone,
      facts,
      headErr,
    ),
    toc,
    lifecycle,
    message,
    eventsSec,
    activity,
    queue.el,
    tokens.el,
    secrets.el,
    config.el,
    files.el,
    term.el,
  );

  // ---- live ----
  let es = null;
  let esRetry = 0;
  let esTimer = null;
  function onLive(f) {
    addEvent(f);
    if (f.event === "WORKSPACE_PROVISION_FAILED" && f.payload && f.payload.error) failureMsg = f.payload.error;
    if (f.event === "WORKSPACE_HEARTBEAT") {
      liveHb = f.timestamp;
      renderHeader();
    }
    if (f.event === "ACTIVITY_LOGGED") {
      prependActivity(f.payload);
      // A message queued, delivered from the queue or refused changes the queue.
      if (/^a2a_/.test((f.payload && f.payload.activity_type) || "")) queue.poke();
    }
    // Drains start on a heartbeat with spare capacity and stop with the agent.
    if (/^WORKSPACE_(ONLINE|OFFLINE|DEGRADED|PAUSED|REMOVED|PROVISION_FAILED)$/.test(f.event)) queue.poke();
    if (HEADER_EVENTS.test(f.event) && f.event !== "WORKSPACE_HEARTBEAT") refreshWs();
  }
  function openStream() {
    esTimer = null;
    const s = new EventSource(`${base}/events/stream`);
    es = s;
    s.addEventListener("open", () => {
      esRetry = 0;
      say(evNote, "");
      // The stream carries changes from now on: read the row again, so a change made between
      // the first read and this open (a warm-pool workspace can be online within milliseconds
      // of its create) is not missed.
      refreshWs();
    });
    s.addEventListener("message", (e) => {
      let f;
      try {
        f = normalizeFrame(JSON.parse(e.data), e.lastEventId);
      } catch {
        return;
      }
      if (f) onLive(f);
    });
    s.addEventListener("error", (e) => {
      if (es !== s) return;
      if (e.data) say(evNote, "The live stream was cut off; resuming…", "info");
      if (s.readyState === EventSource.CLOSED) {
        // Refused (401/404/410) or dropped for good: the browser gives up; retry with backoff.
        const delay = Math.min(30000, 1000 * 2 ** esRetry++);
        say(evNote, `Live events unavailable; retrying in ${Math.round(delay / 1000)} s.`, "error");
        es = null;
        esTimer = setTimeout(openStream, delay);
      } else say(evNote, "Live events: reconnecting…", "info");
    });
  }
  cleanups.push(() => {
    clearTimeout(esTimer);
    if (es) es.close();
    es = null;
  });

  async function loadHistory() {
    if (!admin) return;
    try {
      const list = await get(`/events/${encodeURIComponent(id)}?limit=50`);
      for (const e of list || []) {
        const f = normalizeFrame({ ...e, event: e.event_type, timestamp: e.created_at, payload: e.payload, seq: e.seq });
        if (f) addEvent(f);
      }
      const failed = (list || []).find((e) => e.event_type === "WORKSPACE_PROVISION_FAILED");
      if (failed && failed.payload && failed.payload.error && !failureMsg) {
        failureMsg = failed.payload.error;
        renderHeader();
      }
    } catch (e) {
      say(evNote, e, "error");
    }
  }

  const tick = setInterval(() => {
    const el = facts.querySelector(".hb-age");
    if (el) renderHeader();
  }, 5000);
  cleanups.push(() => clearInterval(tick));

  openStream();
  refreshWs();
  loadHistory();
  loadActivity();
  queue.load();
  tokens.load();
  secrets.load();
  config.load();
  files.load();

  return () => {
    for (const fn of cleanups) {
      try {
        fn();
      } catch (e) {
        console.error(e);
      }
    }
    if (dialog.open) dialog.close();
  };
}
