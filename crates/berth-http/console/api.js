// The console's fetch wrapper and its session. The session is an HttpOnly cookie the browser
// sends by itself; the only thing JS keeps is the CSRF token of the session, in memory, which
// every non-GET request carries as `X-CSRF-Token`. No token is ever written to storage.

/** An HTTP error answer: `status` (0 for a network failure), the server's `error` text, `body`. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

let current = null; // {principal, workspace_id?, csrf, expires_at}
let checking = null;

/** The signed-in session, or null. */
export const session = () => current;

function setSession(s) {
  current = s && s.principal ? s : null;
}

/**
 * One request. `body` (any JSON value) is sent as JSON; `headers` adds headers. Resolves to
 * `{status, data, headers}`; rejects with an ApiError on a non-2xx answer.
 */
export async function request(method, path, { body, headers } = {}) {
  const hdrs = { Accept: "application/json", ...(headers || {}) };
  const init = { method, headers: hdrs, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET" && method !== "HEAD" && current && current.csrf) {
    hdrs["X-CSRF-Token"] = current.csrf;
  }
  if (body !== undefined) {
    hdrs["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `the server could not be reached (${e.message})`, null);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!res.ok) {
    let msg = res.statusText || "request failed";
    if (data && typeof data === "object" && typeof data.error === "string") msg = data.error;
    else if (data && typeof data === "object" && data.error && data.error.message) msg = data.error.message;
    else if (typeof data === "string" && data.trim()) msg = data.trim().slice(0, 300);
    if (res.status === 401 && !path.startsWith("/console/session")) checkStillSignedIn();
    throw new ApiError(res.status, msg, data);
  }
  return { status: res.status, data, headers: res.headers };
}

export const get = async (path) => (await request("GET", path)).data;
export const post = async (path, body) => (await request("POST", path, { body })).data;
export const putJson = async (path, body) => (await request("PUT", path, { body })).data;
export const patch = async (path, body) => (await request("PATCH", path, { body })).data;
export const del = async (path) => (await request("DELETE", path)).data;

/**
 * A 401 may be an admin-only route seen by a workspace session, or a session that expired:
 * ask the session route once, and tell the app (`berth:signedout`) when it is gone.
 */
function checkStillSignedIn() {
  if (checking || !current) return;
  checking = request("GET", "/console/session")
    .then((r) => setSession(r.data))
    .catch((e) => {
      if (e.status === 401) {
        setSession(null);
        window.dispatchEvent(new CustomEvent("berth:signedout"));
      }
    })
    .finally(() => {
      checking = null;
    });
}

/** Reads the session (null when not signed in). Other errors reject. */
export async function loadSession() {
  try {
    setSession((await request("GET", "/console/session")).data);
  } catch (e) {
    if (e.status !== 401) throw e;
    setSession(null);
  }
  return current;
}

/** Exchanges a token for the session cookie; the token is not kept anywhere. */
export async function signIn(token) {
  setSession((await request("POST", "/console/session", { body: { token } })).data);
  return current;
}

/** Ends the session (best effort: the local session is dropped either way). */
export async function signOut() {
  try {
    await request("DELETE", "/console/session");
  } finally {
    setSession(null);
  }
}

/** `ws://` or `wss://` plus this host. */
export const wsBase = () => (location.protocol === "https:" ? "wss://" : "ws://") + location.host;

/**
 * A live frame in one shape, from `/ws` (`{event, workspace_id, timestamp: RFC 3339, payload,
 * seq}`) or from the SSE stream (`{type, data, timestamp: ms}` with the seq as the SSE id).
 */
export function normalizeFrame(raw, sseId) {
  if (!raw || typeof raw !== "object") return null;
  const event = raw.event || raw.type || raw.event_type;
  if (!event) return null;
  let seq = Number(raw.seq);
  if (!Number.isFinite(seq) && sseId !== undefined && sseId !== "") seq = Number(sseId);
  const ts = typeof raw.timestamp === "number" ? raw.timestamp : Date.parse(raw.timestamp || raw.created_at);
  return {
    event,
    workspace_id: raw.workspace_id || null,
    timestamp: Number.isFinite(ts) ? ts : Date.now(),
    payload: raw.payload !== undefined ? raw.payload : raw.data !== undefined ? raw.data : {},
    seq: Number.isFinite(seq) ? seq : null,
  };
}
