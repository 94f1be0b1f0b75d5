// The console's entry: the session, the header and the hash router.
//   #/signin            sign in with the admin token or a workspace token
//   #/                  the overview and workspace list (admin)
//   #/create            create a workspace (admin)
//   #/workspaces/<id>   one workspace (a workspace session sees only its own)

import { loadSession, session, signIn, signOut } from "./api.js";
import * as live from "./live.js";
import { h, put, say, field, alertBox, busy, errorText } from "./dom.js";
import * as list from "./list.js";
import * as create from "./create.js";
import * as workspace from "./workspace.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const sessionBox = document.getElementById("session-box");
const whoami = document.getElementById("whoami");
const signoutBtn = document.getElementById("signout");
const liveEl = document.getElementById("live-status");

let cleanup = null;
let afterSignIn = null;
let signinNote = "";

const ctx = {
  get session() {
    return session();
  },
  navigate,
};

const home = () => {
  const s = session();
  if (!s) return "#/signin";
  return s.principal === "admin" ? "#/" : `#/workspaces/${s.workspace_id}`;
};

/** Goes to `hash` (a new history entry). */
function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

/** Goes to `hash` in place of the current entry (redirects). */
function redirect(hash) {
  history.replaceState(null, "", hash);
  route();
}

function renderChrome() {
  const s = session();
  sessionBox.hidden = !s;
  signoutBtn.hidden = !s;
  whoami.textContent = s ? (s.principal === "admin" ? "admin" : `workspace ${s.workspace_id}`) : "";
  const links = !s
    ? []
    : s.principal === "admin"
      ? [["#/", "Workspaces"], ["#/create", "Create"]]
      : [[home(), "My workspace"]];
  const here = location.hash || "#/";
  put(
    nav,
    h("ul", {}, links.map(([href, t]) => h("li", {}, h("a", { href, "aria-current": href === here ? "page" : null }, t)))),
  );
  nav.hidden = !s;
}

function renderSignin() {
  document.title = "Sign in — berth";
  const token = h("input", { id: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const btn = h("button", { type: "submit", id: "signin" }, "Sign in");
  const err = alertBox("signin-error");
  const form = h(
    "form",
    { class: "card form signin", id: "signin-form" },
    field("Admin or workspace token", token, "Exchanged for a session cookie; this page does not keep it."),
    h("div", { class: "actions" }, btn),
    err,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    // The token leaves the DOM at once, whatever the answer.
    const value = token.value.trim();
    token.value = "";
    if (!value) {
      say(err, "Enter a token.", "error");
      token.focus();
      return;
    }
    busy(btn, async () => {
      try {
        await signIn(value);
        signinNote = "";
        const s = session();
        let next = afterSignIn && afterSignIn !== "#/signin" ? afterSignIn : home();
        if (s && s.principal !== "admin") next = home();
        afterSignIn = null;
        navigate(next);
      } catch (e) {
        say(err, e.status === 401 ? "Invalid token" : errorText(e), "error");
        token.focus();
      }
    });
  });
  put(
    main,
    h("h1", { class: "page-title", tabindex: "-1" }, "Sign in"),
    signinNote ? h("p", { class: "note is-info", role: "status" }, signinNote) : null,
    form,
  );
  token.focus();
}

function renderMessage(title, ...body) {
  document.title = `${title} — berth`;
  put(main, h("h1", { class: "page-title", tabindex: "-1" }, title), h("div", { class: "card" }, ...body));
}

function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      console.error(e);
    }
    cleanup = null;
  }
  const hash = location.hash || "#/";
  const s = session();
  renderChrome();
  if (hash === "#/signin") {
    if (s) return redirect(home());
    return renderSignin();
  }
  if (!s) {
    afterSignIn = hash;
    return redirect("#/signin");
  }
  document.title = "berth";
  const m = /^#\/workspaces\/([^/?#]+)$/.exec(hash);
  if (m) {
    const id = decodeURIComponent(m[1]);
    if (s.principal !== "admin" && id !== s.workspace_id) {
      renderMessage(
        "Not available",
        h("p", {}, "This session belongs to another workspace and may only see its own page."),
        h("p", {}, h("a", { href: home() }, "Go to my workspace")),
      );
    } else cleanup = workspace.render(main, ctx, id);
  } else if (hash === "#/create") {
    if (s.principal !== "admin") return redirect(home());
    document.title = "Create — berth";
    cleanup = create.render(main, ctx);
  } else if (hash === "#/" || hash === "#") {
    if (s.principal !== "admin") return redirect(home());
    document.title = "Workspaces — berth";
    cleanup = list.render(main, ctx);
  } else {
    renderMessage("Page not found", h("p", {}, h("a", { href: home() }, "Back to the start")));
  }
  const title = main.querySelector(".page-title");
  if (title && document.activeElement === document.body) title.focus({ preventScroll: true });
}

signoutBtn.addEventListener("click", () =>
  busy(signoutBtn, async () => {
    try {
      await signOut();
    } catch (e) {
      console.warn("sign-out:", errorText(e));
    }
    live.closeAll();
    signinNote = "Signed out.";
    afterSignIn = null;
    navigate("#/signin");
  }),
);

window.addEventListener("berth:signedout", () => {
  live.closeAll();
  signinNote = "Your session has ended: sign in again.";
  afterSignIn = location.hash;
  redirect("#/signin");
});

// The skip link focuses <main> without touching the hash (the router owns it).
document.querySelector(".skip")?.addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});

live.onState((s) => {
  liveEl.textContent = s === "open" ? "live" : s === "reconnecting" ? "reconnecting…" : s === "connecting" ? "connecting…" : "";
  liveEl.className = `live live-${s}`;
});

async function boot() {
  try {
    await loadSession();
  } catch (e) {
    const retry = h("button", { type: "button" }, "Retry");
    retry.addEventListener("click", boot);
    renderMessage("berth is not reachable", h("p", { role: "alert" }, errorText(e)), retry);
    return;
  }
  window.removeEventListener("hashchange", route);
  window.addEventListener("hashchange", route);
  route();
}

boot();
