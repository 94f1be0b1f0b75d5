// The data panels of a workspace's page: the A2A queue, tokens, secrets, config and files. Each
// returns `{el, load, cleanup?}`; `base` is `/workspaces/<id>`.

import { get, post, patch, del, putJson } from "./api.js";
import { h, put, say, alertBox, section, field, attempt, timeEl, pretty, encPath } from "./dom.js";

const thead = (...cols) => h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c))));
const region = (label, table) => h("div", { class: "table-wrap", role: "region", "aria-label": label, tabindex: "0" }, table);

// ---- A2A queue ---------------------------------------------------------------------------

const QUEUE_LIMIT = 50;
// A refresh asked for by the event stream waits this long, so a burst of events reads once.
const QUEUE_SETTLE_MS = 400;

/**
 * The workspace's busy queue (`GET …/a2a/queue`): messages waiting for a busy agent, in
 * delivery order, then the recently finished ones. Read on load, on the Refresh button, and when
 * the page's event stream says something that can change it (`poke`) — never on a timer.
 */
export function queuePanel(base) {
  const tbody = h("tbody");
  const wrap = region(
    "A2A queue",
    h("table", { id: "queue", class: "grid" }, thead("Position", "Status", "Method", "Queued", "Expires", "Attempts", "Last error"), tbody),
  );
  const empty = h("p", { class: "empty", id: "queue-empty", hidden: true }, "Nothing queued: messages wait here only while the agent is busy.");
  const result = alertBox("queue-result");
  const refresh = h("button", { type: "button", id: "queue-refresh", class: "secondary" }, "Refresh");
  const summary = h("p", { class: "hint", id: "queue-summary", role: "status" });
  let timer = null;

  function row(q) {
    const pending = q.status === "queued" || q.status === "dispatched";
    return h(
      "tr",
      { dataset: { queueId: q.queue_id, status: q.status } },
      h("td", { class: "num" }, q.position != null ? `#${q.position}` : q.status === "dispatched" ? "delivering" : "—"),
      h("td", {}, h("span", { class: `badge ${pending ? "st-provisioning" : q.status === "completed" ? "st-online" : "st-failed"}` }, q.status)),
      h("td", {}, q.method || "—"),
      h("td", {}, timeEl(q.enqueued_at)),
      h("td", {}, q.expires_at ? timeEl(q.expires_at) : "never"),
      h("td", { class: "num" }, String(q.attempts ?? 0)),
      h("td", { class: "wrap" }, q.last_error || ""),
    );
  }

  async function load() {
    clearTimeout(timer);
    timer = null;
    try {
      const list = (await get(`${base}/a2a/queue?limit=${QUEUE_LIMIT}`)) || [];
      put(tbody, list.map(row));
      const waiting = list.filter((q) => q.status === "queued").length;
      summary.textContent = list.length
        ? `${waiting} waiting${list.length >= QUEUE_LIMIT ? ` (the latest ${QUEUE_LIMIT} items shown)` : ""}.`
        : "";
      empty.hidden = list.length > 0;
      wrap.hidden = !list.length;
      say(result, "");
    } catch (e) {
      say(result, e, "error");
    }
  }

  /** A refresh soon: the event stream saw something that can change the queue. */
  function poke() {
    if (!timer) timer = setTimeout(load, QUEUE_SETTLE_MS);
  }

  refresh.addEventListener("click", () => attempt(refresh, result, load));
  const el = section(
    "A2A queue",
    "sec-queue",
    h(
      "div",
      { class: "bar-row" },
      h("p", { class: "hint" }, "Messages that met a busy agent, delivered in order as it frees up; finished ones stay listed for seven days."),
      refresh,
    ),
    summary,
    result,
    empty,
    wrap,
  );
  return { el, load, poke, cleanup: () => clearTimeout(timer) };
}

// ---- tokens ------------------------------------------------------------------------------

export function tokensPanel(base) {
  const tbody = h("tbody");
  const wrap = region("Tokens", h("table", { id: "tokens", class: "grid" }, thead("Prefix", "Created", "Last used", "Action"), tbody));
  const empty = h("p", { class: "empty", hidden: true }, "No live tokens.");
  const mint = h("button", { type: "button", id: "token-mint" }, "Mint a token");
  const result = alertBox("tokens-result");
  const once = h("div", { class: "once card", hidden: true });

  // The minted token lives only in this field, until dismissed or the page is left.
  function clearOnce() {
    once.replaceChildren();
    once.hidden = true;
  }
  function showOnce(token) {
    const input = h("input", { id: "token-new", type: "text", readOnly: true, value: token, class: "mono", spellcheck: "false", autocomplete: "off" });
    const copy = h("button", { type: "button" }, "Copy");
    const dismiss = h("button", { type: "button", class: "secondary" }, "I saved it — dismiss");
    const note = h("p", { class: "note", role: "status" });
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(input.value);
        note.textContent = "Copied to the clipboard.";
      } catch {
        input.select();
        note.textContent = "The clipboard is not available: the token is selected, copy it with Ctrl+C / ⌘C.";
      }
    });
    dismiss.addEventListener("click", () => {
      clearOnce();
      mint.focus();
    });
    put(
      once,
      h("p", { class: "warn" }, h("strong", {}, "Save this token now: "), "it is shown once and cannot be retrieved again. Whoever holds it can act as this workspace."),
      field("New token", input),
      h("div", { class: "actions" }, copy, dismiss),
      note,
    );
    once.hidden = false;
    input.focus();
    input.select();
  }

  function row(t) {
    const revoke = h("button", { type: "button", class: "revoke danger small", "aria-label": `Revoke token ${t.prefix}…` }, "Revoke");
    revoke.addEventListener("click", () =>
      attempt(revoke, result, async () => {
        await del(`${base}/tokens/${encodeURIComponent(t.id)}`);
        say(result, `Token ${t.prefix}… revoked.`, "ok");
        await load();
      }),
    );
    return h(
      "tr",
      { dataset: { tokenId: t.id } },
      h("td", { class: "mono" }, `${t.prefix}…`),
      h("td", {}, timeEl(t.created_at)),
      h("td", {}, t.last_used_at ? timeEl(t.last_used_at) : "never"),
      h("td", {}, revoke),
    );
  }

  async function load() {
    try {
      const list = (await get(`${base}/tokens`))?.tokens || [];
      put(tbody, list.map(row));
      empty.hidden = list.length > 0;
      wrap.hidden = !list.length;
    } catch (e) {
      say(result, e, "error");
    }
  }

  mint.addEventListener("click", () =>
    attempt(mint, result, async () => {
      say(result, "");
      showOnce((await post(`${base}/tokens`, {})).auth_token);
      await load();
    }),
  );

  const el = section(
    "Tokens",
    "sec-tokens",
    h("p", { class: "hint" }, "Live tokens of this workspace (never their values)."),
    h("div", { class: "actions" }, mint),
    once,
    result,
    empty,
    wrap,
  );
  return { el, load, cleanup: clearOnce };
}

// ---- secrets -----------------------------------------------------------------------------

export function secretsPanel(base) {
  const list = h("ul", { id: "secrets", class: "plain-list" });
  const empty = h("p", { class: "empty", hidden: true }, "No secrets.");
  const key = h("input", { id: "secret-key", type: "text", required: true, autocomplete: "off", spellcheck: "false" });
  const value = h("input", { id: "secret-value", type: "password", required: true, autocomplete: "new-password" });
  const save = h("button", { type: "submit", id: "secret-save" }, "Save secret");
  const result = alertBox("secrets-result");
  const form = h("form", { class: "inline-form", autocomplete: "off" }, field("Name", key), field("Value", value), save);

  function item(s) {
    const li = h(
      "li",
      { dataset: { secret: s.key } },
      h("code", {}, s.key),
      " ",
      h("small", { class: "muted" }, s.scope && s.scope !== "workspace" ? `${s.scope} · ` : "", "updated ", timeEl(s.updated_at || s.created_at)),
    );
    if (!s.scope || s.scope === "workspace") {
      const d = h("button", { type: "button", class: "delete danger small", "aria-label": `Delete secret ${s.key}` }, "Delete");
      d.addEventListener("click", () =>
        attempt(d, result, async () => {
          await del(`${base}/secrets/${encodeURIComponent(s.key)}`);
          say(result, `${s.key} deleted (the agent restarts without it).`, "ok");
          await load();
        }),
      );
      li.append(" ", d);
    }
    return li;
  }

  async function load() {
    try {
      const d = await get(`${base}/secrets`);
      const arr = Array.isArray(d) ? d : d?.secrets || [];
      put(list, arr.map(item));
      empty.hidden = arr.length > 0;
    } catch (e) {
      say(result, e, "error");
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const k = key.value.trim();
    // The value leaves the DOM at once: it lives only in this closure until the request is sent.
    const v = value.value;
    value.value = "";
    if (!k || !v) return say(result, "Both a name and a value are needed.", "error");
    attempt(save, result, async () => {
      await post(`${base}/secrets`, { key: k, value: v });
      say(result, `${k} saved (the agent restarts to pick it up).`, "ok");
      key.value = "";
      await load();
    });
  });

  const el = section("Secrets", "sec-secrets", h("p", { class: "hint" }, "Values are write-only: never shown, never kept on this page."), form, result, empty, list);
  return { el, load };
}

// ---- config ------------------------------------------------------------------------------

export function configPanel(base) {
  const view = h("pre", { id: "config-json", class: "code" }, "…");
  const edit = h("textarea", { id: "config-patch", rows: "8", spellcheck: "false", class: "mono" });
  const saveBtn = h("button", { type: "submit", id: "config-save" }, "Merge into config");
  const result = alertBox("config-result");
  const form = h(
    "form",
    {},
    field("JSON object to merge", edit, "PATCH merges keys: keys left out stay as they are; a key set to null is deleted."),
    h("div", { class: "actions" }, saveBtn),
  );

  async function load() {
    try {
      const d = await get(`${base}/config`);
      const data = d && typeof d === "object" && "data" in d ? d.data : d;
      view.textContent = edit.value = pretty(data ?? {});
    } catch (e) {
      view.textContent = "";
      say(result, e, "error");
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    let obj;
    try {
      obj = JSON.parse(edit.value);
    } catch (e) {
      return say(result, `Not valid JSON: ${e.message}`, "error");
    }
    if (!obj || typeof obj !== "object" || Array.isArray(obj)) return say(result, "The config patch must be a JSON object.", "error");
    attempt(saveBtn, result, async () => {
      const d = await patch(`${base}/config`, obj);
      say(result, `Config ${d?.status || "updated"}.`, "ok");
      await load();
    });
  });

  const el = section("Config", "sec-config", h("h4", { class: "sub" }, "Current"), view, form, result);
  return { el, load };
}

// ---- files -------------------------------------------------------------------------------

export function filesPanel(base) {
  const root = h("select", { id: "files-root" }, ["/configs", "/workspace"].map((r) => h("option", { value: r }, r)));
  const where = h("p", { class: "mono crumb", "aria-live": "polite" });
  const up = h("button", { type: "button", class: "secondary small", disabled: true }, "Up one level");
  const list = h("ul", { id: "files", class: "files plain-list" });
  const result = alertBox("files-result");
  const viewer = h("div", { class: "viewer", hidden: true });
  let dir = "";
  const closeViewer = () => {
    viewer.hidden = true;
    viewer.replaceChildren();
  };

  async function openDir(path) {
    dir = path;
    where.textContent = `${root.value}/${dir}`;
    up.disabled = !dir;
    say(result, "");
    put(list, h("li", { class: "muted" }, "Loading…"));
    try {
      const entries = await get(`${base}/files?root=${encodeURIComponent(root.value)}&depth=1${dir ? `&path=${encodeURIComponent(dir)}` : ""}`);
      const arr = (Array.isArray(entries) ? entries : []).sort((a, b) => b.dir - a.dir || a.path.localeCompare(b.path));
      if (!arr.length) return put(list, h("li", { class: "empty" }, "Empty directory."));
      put(
        list,
        arr.map((e) => {
          // Entries are relative to the listed directory.
          const full = dir ? `${dir}/${e.path}` : e.path;
          const b = h("button", { type: "button", class: `linkish ${e.dir ? "is-dir" : "is-file"}` }, e.dir ? `${e.path}/` : e.path);
          b.addEventListener("click", () => (e.dir ? openDir(full) : openFile(full)));
          return h("li", { dataset: { path: full } }, b, e.dir ? "" : h("small", { class: "muted" }, ` ${e.size} bytes`));
        }),
      );
    } catch (e) {
      list.replaceChildren();
      say(result, e, "error");
    }
  }

  async function openFile(path) {
    say(result, "");
    const r = root.value;
    const url = `${base}/files/${encPath(path)}?root=${encodeURIComponent(r)}`;
    try {
      const f = await get(url);
      const pre = h("pre", { id: "file-content", class: "code", tabindex: "0" }, f.content);
      const close = h("button", { type: "button", class: "secondary small" }, "Close");
      close.addEventListener("click", closeViewer);
      const parts = [h("h4", { class: "sub mono" }, `${r}/${f.path || path}`, h("small", { class: "muted" }, ` (${f.size} bytes)`)), pre];
      if (r === "/configs") {
        const area = h("textarea", { id: "file-editor", rows: "10", spellcheck: "false", class: "mono" });
        area.value = f.content;
        const saveBtn = h("button", { type: "submit", id: "file-save" }, "Save file");
        const form = h("form", {}, field("Edit", area, "Saving a /configs file restarts a running workspace shortly after."), h("div", { class: "actions" }, saveBtn, close));
        form.addEventListener("submit", (ev) => {
          ev.preventDefault();
          attempt(saveBtn, result, async () => {
            const d = await putJson(url, { content: area.value });
            pre.textContent = area.value;
            say(result, `Saved ${d.path || path}${d.restart_scheduled ? " (restart scheduled)" : ""}${d.source === "stored" ? " (applied at the next start)" : ""}.`, "ok");
          });
        });
        parts.push(form);
      } else parts.push(h("div", { class: "actions" }, close));
      put(viewer, parts);
      viewer.hidden = false;
      pre.focus();
    } catch (e) {
      say(result, e, "error");
    }
  }

  root.addEventListener("change", () => {
    closeViewer();
    openDir("");
  });
  up.addEventListener("click", () => openDir(dir.split("/").slice(0, -1).join("/")));

  const el = section("Files", "sec-files", h("div", { class: "bar-row" }, field("Root", root), up), where, result, list, viewer);
  return { el, load: () => openDir("") };
}
