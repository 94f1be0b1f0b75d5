// The create page (`#/create`): the templates directory, then `POST /workspaces` and on to the
// new workspace's page, where it is seen going online live.

import { get, request } from "./api.js";
import { h, put, field, say, alertBox, busy } from "./dom.js";

export function render(root, ctx) {
  const name = h("input", { id: "create-name", name: "name", type: "text", required: true, autocomplete: "off", maxlength: "255" });
  const template = h("select", { id: "create-template", name: "template", required: true }, h("option", { value: "" }, "Loading templates…"));
  const tier = h(
    "select",
    { id: "create-tier", name: "tier" },
    h("option", { value: "" }, "Template default"),
    [1, 2, 3, 4].map((t) => h("option", { value: String(t) }, `Tier ${t}`)),
  );
  const model = h("input", { id: "create-model", name: "model", type: "text", autocomplete: "off" });
  const desc = h("p", { class: "hint", id: "create-template-desc", "aria-live": "polite" });
  const submit = h("button", { type: "submit", id: "create-submit" }, "Create workspace");
  const error = alertBox("create-error");
  const invalid = h("div", { id: "templates-invalid" });
  const form = h(
    "form",
    { id: "create-form", class: "card form", novalidate: false },
    field("Name", name),
    field("Template", template),
    desc,
    field("Tier (optional)", tier, "1–4; without it the template's tier (or the server default)."),
    field("Model override (optional)", model, "Leave empty for the template's model."),
    h("div", { class: "actions" }, submit, h("a", { href: "#/", class: "button secondary" }, "Cancel")),
    error,
  );

  put(root, h("h1", { class: "page-title", tabindex: "-1" }, "Create a workspace"), form, invalid);

  let templates = [];
  // One key per filled-in form: a double submit (or a retry after a lost answer) creates one
  // workspace, not two.
  let idemKey = crypto.randomUUID();
  form.addEventListener("input", () => {
    idemKey = crypto.randomUUID();
  });

  function describe() {
    const t = templates.find((x) => x.id === template.value);
    if (!t) {
      desc.textContent = "";
      model.placeholder = "";
      return;
    }
    desc.textContent = `${t.description || "No description."} Runtime ${t.runtime}, model ${t.model || "—"}${t.tier ? `, tier ${t.tier}` : ""}.`;
    model.placeholder = t.model || "";
  }
  template.addEventListener("change", describe);

  get("/templates")
    .then((list) => {
      list = Array.isArray(list) ? list : [];
      templates = list.filter((t) => !t.error && t.code !== "TEMPLATE_INVALID");
      const bad = list.filter((t) => t.error || t.code === "TEMPLATE_INVALID");
      if (templates.length) {
        put(
          template,
          templates.map((t) => h("option", { value: t.id }, `${t.name || t.id} (${t.runtime}${t.model ? `, ${t.model}` : ""})`)),
        );
        describe();
      } else {
        put(template, h("option", { value: "" }, "No usable template"));
        say(error, "No usable template: add one to the templates directory (or fix the ones listed below).", "error");
        submit.disabled = true;
      }
      if (bad.length)
        put(
          invalid,
          h(
            "section",
            { class: "card", "aria-labelledby": "tinv-h" },
            h("h2", { id: "tinv-h" }, "Unusable templates"),
            h("ul", {}, bad.map((t) => h("li", {}, h("strong", {}, t.id || "?"), ` — ${t.error || t.code}`))),
          ),
        );
    })
    .catch((e) => {
      put(template, h("option", { value: "" }, "Templates unavailable"));
      say(error, e, "error");
    });

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    say(error, "");
    const body = { name: name.value.trim(), template: template.value };
    if (!body.name) {
      say(error, "A name is required.", "error");
      name.focus();
      return;
    }
    if (!body.template) {
      say(error, "Choose a template.", "error");
      template.focus();
      return;
    }
    if (tier.value) body.tier = Number(tier.value);
    if (model.value.trim()) body.model = model.value.trim();
    busy(submit, async () => {
      try {
        const r = await request("POST", "/workspaces", { body, headers: { "Idempotency-Key": idemKey } });
        const id = r.data && r.data.id;
        if (!id) throw new Error("the server answered without an id");
        ctx.navigate(`#/workspaces/${id}`);
      } catch (e) {
        // A refused request stored nothing under the key; only a lost answer keeps it.
        if (e.status) idemKey = crypto.randomUUID();
        say(error, e, "error");
      }
    });
  });

  name.focus();
  return () => {};
}
