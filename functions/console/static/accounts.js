// Accounts of my teams with their health; check, pull now, and the add/change form.
import { api, query } from "./api.js";
import { user } from "./auth.js";
import { h, show, when } from "./dom.js";

function healthCell(health) {
  const error = health.last_error;
  return h(
    "td",
    {},
    h("div", {}, "last pull: ", when(health.last_pull && health.last_pull.at)),
    h("div", {}, "last send: ", when(health.last_send && health.last_send.at),
      health.last_send ? ` (${health.last_send.status})` : ""),
    error ? h("div", { class: "bad" }, `${error.source}: ${error.message}`) : h("div", { class: "ok" }, "no error"),
  );
}

function resultBlock(title, result) {
  const lines = [];
  for (const protocol of ["pop3", "smtp"]) {
    const part = result[protocol];
    if (!part) continue;
    lines.push(h("div", { class: part.ok ? "ok" : "bad" },
      `${protocol.toUpperCase()}: ${part.ok ? "works" : `${part.problem}: ${part.message}`}`));
  }
  return h("div", { class: "notice", "data-test": "result" }, h("strong", {}, title), ...lines);
}

function isAdmin(team) {
  const me = user();
  return me.groups.includes(team) && me.groups.includes(`${team}-admin`);
}

export async function accountsView() {
  show(h("h2", {}, "Accounts"), h("p", { class: "muted" }, "Loading…"));
  const { accounts } = await api("GET", "/api/core/mail/accounts");
  const out = h("div", { id: "account-result" });
  const rows = accounts.map((entry) => {
    const check = async () => {
      out.replaceChildren(h("p", { class: "muted" }, `Checking ${entry.account}…`));
      const { check: result } = await api("POST",
        `/api/core/mail/accounts/${encodeURIComponent(entry.account)}/check${query({ team: entry.team })}`);
      out.replaceChildren(resultBlock(`Check of ${entry.account}`, result));
    };
    const pull = async () => {
      out.replaceChildren(h("p", { class: "muted" }, `Pulling ${entry.account}…`));
      const report = await api("POST",
        `/api/core/mail/pull/${encodeURIComponent(entry.account)}${query({ team: entry.team })}`);
      const [first] = report.accounts;
      out.replaceChildren(h("div", { class: "notice", "data-test": "pull-report" },
        h("strong", {}, `Pull of ${entry.account}: `),
        `fetched ${first.fetched}, skipped ${first.skipped}, remaining ${first.remaining}`,
        first.error ? h("div", { class: "bad" }, first.error) : null));
    };
    return h("tr", { "data-account": entry.account },
      h("td", {}, entry.team), h("td", {}, entry.account), h("td", {}, entry.configuration.mail_from),
      healthCell(entry.health),
      h("td", {},
        h("button", { onclick: check }, "Check"), " ",
        h("button", { onclick: pull }, "Pull now"), " ",
        isAdmin(entry.team) ? h("button", { onclick: () => formView(entry) }, "Change") : null));
  });
  const adminTeams = [...new Set(user().groups.filter((group) => isAdmin(group)))];
  show(
    h("h2", {}, "Accounts"),
    h("table", {}, h("tr", {}, ...["Team", "Account", "From", "Health", ""].map((t) => h("th", {}, t))), ...rows),
    out,
    adminTeams.length ? h("p", {}, h("button", { id: "add-account", onclick: () => formView(null) }, "Add account")) : null,
  );
}

const FIELDS = [
  ["mail_from", "From address", "text"],
  ["mail_username", "User name", "text"],
  ["mail_password", "Password", "password"],
  ["smtp.host", "SMTP host", "text"],
  ["smtp.port", "SMTP port", "number"],
  ["smtp.security", "SMTP security", "security"],
  ["pop3.host", "POP3 host", "text"],
  ["pop3.port", "POP3 port", "number"],
  ["pop3.security", "POP3 security", "security"],
];

function input(name, type, value, entry) {
  if (type === "security") {
    return h("select", { name }, ...["ssl", "starttls", "none"].map((option) =>
      h("option", { value: option, selected: option === value }, option)));
  }
  const placeholder = name === "mail_password" && entry && entry.secrets.mail_password ? "set (leave empty to keep it)" : "";
  return h("input", { name, type, value: name === "mail_password" ? "" : value ?? "", placeholder });
}

function valueAt(configuration, name) {
  return name.split(".").reduce((value, part) => (value ? value[part] : undefined), configuration);
}

function accountFromForm(form, entry) {
  const data = new FormData(form);
  const account = { ...(entry ? entry.configuration : {}) };
  for (const [name, , type] of FIELDS) {
    const value = data.get(name);
    if (name === "mail_password" && !value) continue; // left out: the stored password is kept
    const [group, key] = name.split(".");
    const typed = type === "number" ? Number(value) : value;
    if (key) account[group] = { ...(account[group] || {}), [key]: typed };
    else account[group] = typed;
  }
  account.leave_on_server = data.get("leave_on_server") === "on";
  return account;
}

function showFieldError(form, field, message) {
  const known = FIELDS.some(([name]) => name === field);
  const name = known ? field : (field && field.startsWith("auth") ? "mail_password" : "account");
  const target = form.querySelector(`[name="${CSS.escape(name)}"]`);
  const note = h("div", { class: "field-error", "data-error-for": name }, message);
  if (target) {
    target.classList.add("invalid");
    target.after(note);
  } else form.prepend(note);
}

export function formView(entry) {
  const me = user();
  const teams = [...new Set(me.groups.filter((group) => isAdmin(group)))];
  const form = h("form", { class: "grid", id: "account-form" },
    h("label", {}, "Team"),
    h("select", { name: "team", disabled: Boolean(entry) }, ...teams.map((team) =>
      h("option", { value: team, selected: entry && entry.team === team }, team))),
    h("label", {}, "Account name"),
    h("input", { name: "account", value: entry ? entry.account : "", readonly: Boolean(entry) }),
    ...FIELDS.flatMap(([name, label, type]) => [
      h("label", {}, label),
      input(name, type, entry ? valueAt(entry.configuration, name) : type === "security" ? "ssl" : "", entry),
    ]),
    h("label", {}, "Leave mail on server"),
    h("input", { type: "checkbox", name: "leave_on_server", checked: entry ? entry.configuration.leave_on_server : true }),
    h("div", { class: "actions" },
      h("button", { type: "submit", id: "save-account" }, "Check and save"),
      h("button", { type: "button", onclick: () => { location.hash = "#/accounts"; accountsView(); } }, "Cancel")),
  );
  const out = h("div", { id: "form-result" });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.querySelectorAll(".field-error").forEach((note) => note.remove());
    form.querySelectorAll(".invalid").forEach((element) => element.classList.remove("invalid"));
    const data = new FormData(form);
    const team = entry ? entry.team : data.get("team");
    const name = entry ? entry.account : String(data.get("account") || "");
    out.replaceChildren(h("p", { class: "muted" }, "Checking the account before saving…"));
    try {
      const headers = entry ? { "If-Match": String(entry.revision) } : {};
      const saved = await api("PUT", `/api/core/mail/accounts/${encodeURIComponent(name)}${query({ team, check: "true" })}`,
        accountFromForm(form, entry), headers);
      out.replaceChildren(h("p", { class: "ok", "data-test": "saved" }, `Saved ${saved.account.account} (revision ${saved.account.revision}).`));
      entry = saved.account;
    } catch (error) {
      showFieldError(form, error.field, error.message);
      out.replaceChildren(error.body && error.body.check ? resultBlock("The check failed; nothing was saved", error.body.check)
        : h("p", { class: "bad" }, error.message));
    }
  });
  show(h("h2", {}, entry ? `Change ${entry.account}` : "Add account"), form, out);
}
