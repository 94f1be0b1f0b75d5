// DOM helpers of the console: element builders (no innerHTML anywhere, so server text is
// never parsed as markup), time formatting and the status/alert conventions every page shares.

const SVG_NS = "http://www.w3.org/2000/svg";

// Properties set as DOM properties rather than attributes.
const PROPS = new Set(["value", "checked", "disabled", "hidden", "open", "readOnly", "required", "selected"]);

function apply(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "style") throw new Error("inline styles are not allowed (CSP)");
    if (k === "class") el.setAttribute("class", v);
    else if (k === "text") el.textContent = String(v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (PROPS.has(k)) el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** `h("p", {class: "x"}, "text", child…)`: an HTML element. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  apply(el, props);
  append(el, children);
  return el;
}

/** An SVG element; geometry goes in attributes (never style). */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "style") throw new Error("inline styles are not allowed (CSP)");
    el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

/** Replaces the children of `el`. */
export function put(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let seq = 0;
/** A unique element id with a prefix (for label/aria wiring). */
export const uid = (p) => `${p}-${++seq}`;

/** A labelled control: `<div class="field"><label for>…</label>control hint</div>`. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid("f");
  let hintEl = null;
  if (hint) {
    hintEl = h("small", { class: "hint", id: uid("hint") }, hint);
    control.setAttribute("aria-describedby", hintEl.id);
  }
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

/** A section with a heading, wired with aria-labelledby. */
export function section(title, id, ...children) {
  const hid = uid("h");
  return h("section", { class: "panel", id, "aria-labelledby": hid }, h("h3", { id: hid }, title), ...children);
}

/** An alert paragraph (role=alert), hidden until it says something. */
export function alertBox(id) {
  return h("p", { class: "alert", role: "alert", id, hidden: true });
}

/** A polite status paragraph, hidden until it says something. */
export function statusBox(id) {
  return h("p", { class: "note", role: "status", id, hidden: true });
}

/**
 * Shows `msg` in an alert/status box: `kind` "error" (an Error or ApiError), "ok" or "info".
 * An empty msg hides it.
 */
export function say(el, msg, kind = "info") {
  if (!el) return;
  if (msg === null || msg === undefined || msg === "") {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  el.hidden = false;
  el.classList.remove("is-error", "is-ok", "is-info");
  el.classList.add(`is-${kind}`);
  el.textContent = kind === "error" ? errorText(msg) : String(msg);
}

/** "Error 409: the workspace is paused — hint" from an ApiError (or any error). */
export function errorText(err) {
  if (typeof err === "string") return err;
  if (err && typeof err.status === "number") {
    const head = err.status ? `Error ${err.status}: ` : "Error: ";
    const body = err.body && typeof err.body === "object" ? err.body : {};
    const extra = [];
    if (body.code) extra.push(body.code);
    if (body.hint) extra.push(body.hint);
    if (body.status && typeof body.status === "string") extra.push(`status ${body.status}`);
    return head + err.message + (extra.length ? ` (${extra.join("; ")})` : "");
  }
  return `Error: ${err && err.message ? err.message : String(err)}`;
}

/** A status word as a badge: text plus a colour class. */
export function badge(status) {
  const s = String(status || "unknown");
  return h("span", { class: `badge st-${s.replace(/[^a-z_]/g, "")}` }, s);
}

/** Milliseconds as "4s", "3m 12s", "2h 5m", "3d 4h". */
export function fmtDuration(ms) {
  if (!Number.isFinite(ms)) return "—";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr}h ${m % 60}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

/** A time (RFC 3339 string, ms number or Date) as ms since the epoch, or NaN. */
export function toMs(t) {
  if (t === null || t === undefined || t === "") return NaN;
  if (typeof t === "number") return t;
  if (t instanceof Date) return t.getTime();
  return Date.parse(t);
}

/** "3m 12s ago" (or "—"). */
export function ago(t) {
  const ms = toMs(t);
  return Number.isFinite(ms) ? `${fmtDuration(Date.now() - ms)} ago` : "—";
}

/** A `<time>` element with the local time as text and the ISO time as datetime/title. */
export function timeEl(t, withDate = true) {
  const ms = toMs(t);
  if (!Number.isFinite(ms)) return h("span", {}, "—");
  const d = new Date(ms);
  const text = withDate ? d.toLocaleString() : d.toLocaleTimeString();
  return h("time", { datetime: d.toISOString(), title: d.toISOString() }, text);
}

/** Pretty JSON (or the string itself). */
export function pretty(v) {
  return typeof v === "string" ? v : JSON.stringify(v, null, 2);
}

/** One-line JSON, cut at `max` characters. */
export function brief(v, max = 160) {
  let s;
  try {
    s = typeof v === "string" ? v : JSON.stringify(v);
  } catch {
    s = String(v);
  }
  if (s === undefined) return "";
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/**
 * Runs `fn` while `btn` is disabled and marked busy. A disabled button loses the focus (to the
 * page's body): when one of them had it, it gets it back afterwards, so a keyboard user's place
 * is kept.
 */
export async function busy(btn, fn) {
  const controls = Array.isArray(btn) ? btn : [btn];
  const focused = controls.find((b) => b && b === document.activeElement);
  for (const b of controls) {
    if (!b) continue;
    b.disabled = true;
    b.setAttribute("aria-busy", "true");
  }
  try {
    return await fn();
  } finally {
    for (const b of controls) {
      if (!b) continue;
      b.disabled = false;
      b.removeAttribute("aria-busy");
    }
    const lost = !document.activeElement || document.activeElement === document.body;
    if (focused && focused.isConnected && lost) focused.focus();
  }
}

/** `busy(btn, fn)` with a failure shown in the alert box `out`. */
export const attempt = (btn, out, fn) =>
  busy(btn, async () => {
    try {
      await fn();
    } catch (e) {
      say(out, e, "error");
    }
  });

/** One path segment or a `/`-separated path, each segment percent-encoded. */
export const encPath = (p) => p.split("/").filter(Boolean).map(encodeURIComponent).join("/");
