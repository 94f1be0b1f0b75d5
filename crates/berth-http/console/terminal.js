// A line-mode terminal: a <pre> of the shell's output (ANSI escapes stripped) and an input
// line, over `/workspaces/<id>/terminal` with the `berth.terminal.v1` subprotocol (binary
// frames are bytes both ways; text frames are JSON control messages).

import { wsBase, get } from "./api.js";
import { h, put, say, alertBox, section, field, errorText } from "./dom.js";

const MAX_OUTPUT = 200000; // characters kept in the <pre>
const ROWS = 24;
const COLS = 100;

// CSI, OSC (BEL- or ST-terminated), two-character escapes, and C0 controls but \n and \t.
const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]/g;
// An escape sequence cut by the end of a chunk: held until the next one.
const PARTIAL = /\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?)?$/;

/** Removes escape sequences; returns `[clean, carry]` where carry is an unfinished sequence. */
export function stripAnsi(text) {
  let carry = "";
  const m = PARTIAL.exec(text);
  if (m && text.length - m.index < 512) {
    carry = text.slice(m.index);
    text = text.slice(0, m.index);
  }
  return [text.replace(/\r\n/g, "\n").replace(ANSI, ""), carry];
}

export function terminalPanel(id, base) {
  const output = h("pre", { id: "terminal-output", class: "terminal", tabindex: "0", "aria-label": "Terminal output" });
  const input = h("input", { id: "terminal-input", type: "text", autocomplete: "off", spellcheck: "false", disabled: true, class: "mono" });
  const sendBtn = h("button", { type: "submit", disabled: true }, "Send line");
  const openBtn = h("button", { type: "button", id: "terminal-open" }, "Open terminal");
  const closeBtn = h("button", { type: "button", class: "secondary", disabled: true }, "Close");
  const ctrlC = h("button", { type: "button", class: "secondary small", disabled: true, "aria-label": "Send Ctrl+C" }, "Ctrl+C");
  const ctrlD = h("button", { type: "button", class: "secondary small", disabled: true, "aria-label": "Send Ctrl+D" }, "Ctrl+D");
  const diagBtn = h("button", { type: "button", class: "secondary" }, "Diagnose");
  const state = h("p", { class: "note", role: "status", id: "terminal-state" }, "Not connected.");
  const problem = alertBox("terminal-error");
  const diag = h("div", { class: "diagnosis", hidden: true });
  const form = h("form", { class: "inline-form" }, field("Input (Enter sends the line)", input), sendBtn, ctrlC, ctrlD);

  let ws = null;
  let decoder = null;
  let carry = "";
  const encoder = new TextEncoder();

  function write(text) {
    let t = output.textContent + text;
    if (t.length > MAX_OUTPUT) t = t.slice(t.length - MAX_OUTPUT);
    output.textContent = t;
    output.scrollTop = output.scrollHeight;
  }
  function setOpen(open) {
    for (const c of [input, sendBtn, closeBtn, ctrlC, ctrlD]) c.disabled = !open;
    openBtn.disabled = open;
  }
  function sendBytes(s) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(s));
  }

  async function diagnose() {
    diag.hidden = false;
    put(diag, h("p", { class: "muted" }, "Diagnosing…"));
    try {
      const d = await get(`${base}/terminal/diagnose`);
      put(
        diag,
        h("p", {}, d.ok ? "Every step passed." : `First failing step: ${d.first_failure || "?"}.`),
        h(
          "ol",
          { class: "steps" },
          (d.steps || []).map((s) =>
            h(
              "li",
              { class: s.ok ? "ok" : "fail" },
              h("strong", {}, `${s.ok ? "ok" : "FAILED"} `),
              h("code", {}, s.name),
              s.detail ? ` — ${s.detail}` : "",
              s.error ? ` — ${s.error}` : "",
            ),
          ),
        ),
        h("p", {}, h("a", { href: `${base}/terminal/diagnose`, target: "_blank", rel: "noopener" }, "Raw diagnosis (JSON)")),
      );
    } catch (e) {
      put(diag, h("p", { class: "is-error" }, errorText(e)));
    }
  }

  function open() {
    if (ws) return;
    say(problem, "");
    decoder = new TextDecoder("utf-8", { fatal: false });
    carry = "";
    let opened = false;
    const sock = new WebSocket(`${wsBase()}${base}/terminal?rows=${ROWS}&cols=${COLS}`, "berth.terminal.v1");
    sock.binaryType = "arraybuffer";
    ws = sock;
    state.textContent = "Connecting…";
    openBtn.disabled = true;
    sock.addEventListener("open", () => {
      opened = true;
      state.textContent = "Connected.";
      setOpen(true);
      input.focus();
    });
    sock.addEventListener("message", (e) => {
      if (typeof e.data === "string") {
        let c;
        try {
          c = JSON.parse(e.data);
        } catch {
          return;
        }
        if (c.type === "exit") write(`\n[session ended (${c.reason || "exit"}, code ${c.code ?? "unknown"})]\n`);
        else if (c.type === "error") write(`\n[error: ${c.message}]\n`);
        return;
      }
      const [clean, rest] = stripAnsi(carry + decoder.decode(new Uint8Array(e.data), { stream: true }));
      carry = rest;
      if (clean) write(clean);
    });
    sock.addEventListener("close", (e) => {
      if (ws !== sock) return;
      ws = null;
      setOpen(false);
      if (!opened) {
        // The browser hides the refusal's status (403 when the process backend's shell is off,
        // 409 when nothing runs, 429 with too many sessions): the diagnosis says which step fails.
        state.textContent = "Not connected.";
        say(
          problem,
          "The server refused the terminal (the shell may be disabled — the process backend needs `berth serve --process-shell` — or the workspace is not running). The diagnosis below says which step fails.",
          "error",
        );
        diagnose();
      } else state.textContent = `Closed${e.code && e.code !== 1000 ? ` (code ${e.code}${e.reason ? `: ${e.reason}` : ""})` : ""}.`;
    });
  }

  function close() {
    if (!ws) return;
    const s = ws;
    ws = null;
    s.close(1000);
    setOpen(false);
    state.textContent = "Closed.";
  }

  openBtn.addEventListener("click", open);
  closeBtn.addEventListener("click", close);
  diagBtn.addEventListener("click", diagnose);
  ctrlC.addEventListener("click", () => sendBytes("\x03"));
  ctrlD.addEventListener("click", () => sendBytes("\x04"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    sendBytes(`${input.value}\r`);
    input.value = "";
  });
  input.addEventListener("keydown", (e) => {
    if (e.ctrlKey && (e.key === "c" || e.key === "d") && !input.value) {
      e.preventDefault();
      sendBytes(e.key === "c" ? "\x03" : "\x04");
    }
  });

  const el = section(
    "Terminal",
    "sec-terminal",
    h("div", { class: "actions" }, openBtn, closeBtn, diagBtn),
    state,
    problem,
    output,
    form,
    diag,
  );
  return { el, cleanup: close };
}
