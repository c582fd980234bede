// The mailbox (filters, newest first, cursor paging), one mail, and the outbox.
import { api, query } from "./api.js";
import { h, show, when } from "./dom.js";

function summaryRow(mail) {
  return h("tr", { class: "clickable", "data-mail": mail.id, onclick: () => { location.hash = `#/mail/${mail.id}`; } },
    h("td", {}, when(mail.created_at)), h("td", {}, mail.direction), h("td", {}, mail.status),
    h("td", {}, mail.team, " / ", mail.account), h("td", {}, mail.from), h("td", {}, (mail.to || []).join(", ")),
    h("td", {}, mail.subject || "(no subject)"), h("td", { class: "bad" }, mail.error || ""));
}

const HEAD = ["Created", "In/out", "Status", "Team / account", "From", "To", "Subject", "Error"];

export async function mailboxView() {
  const filters = h("form", { class: "filters", id: "filters" },
    h("input", { name: "team", placeholder: "team" }),
    h("input", { name: "account", placeholder: "account" }),
    h("select", { name: "direction" }, h("option", { value: "" }, "in and out"),
      h("option", { value: "in" }, "in"), h("option", { value: "out" }, "out")),
    h("select", { name: "status" }, h("option", { value: "" }, "any status"),
      ...["received", "queued", "sending", "sent", "failed", "unknown"].map((s) => h("option", { value: s }, s))),
    h("button", { type: "submit" }, "Filter"));
  const body = h("tbody");
  const more = h("button", { id: "more", hidden: true }, "More");
  let cursor = null;
  const load = async (reset) => {
    const parameters = Object.fromEntries(new FormData(filters));
    if (reset) { body.replaceChildren(); cursor = null; }
    const page = await api("GET", `/api/core/mail${query({ ...parameters, cursor, limit: 20 })}`);
    body.append(...page.mail.map(summaryRow));
    cursor = page.cursor;
    more.hidden = !cursor;
  };
  filters.addEventListener("submit", (event) => { event.preventDefault(); load(true); });
  more.addEventListener("click", () => load(false));
  show(h("h2", {}, "Mailbox"), filters,
    h("table", { id: "mail-list" }, h("thead", {}, h("tr", {}, ...HEAD.map((t) => h("th", {}, t)))), body), more);
  await load(true);
}

export async function outboxView() {
  show(h("h2", {}, "Outbox"), h("p", { class: "muted" }, "Loading…"));
  const pages = await Promise.all(["queued", "sending", "failed", "unknown"].map((status) =>
    api("GET", `/api/core/mail${query({ direction: "out", status, limit: 50 })}`)));
  const mails = pages.flatMap((page) => page.mail).sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  show(h("h2", {}, "Outbox"),
    h("p", { class: "muted" }, "Mail not (yet) sent: queued, sending, failed, and unknown (the server may or may not have taken it)."),
    h("table", { id: "outbox" }, h("tr", {}, ...HEAD.map((t) => h("th", {}, t))), ...mails.map(summaryRow)),
    mails.length ? null : h("p", {}, "Nothing waiting or failed."));
}

// Remote images stay blocked (the frame's own policy) until the reader allows them.
function frameDocument(html, allowRemote) {
  const images = allowRemote ? "img-src data: https: http:" : "img-src data:";
  const policy = `default-src 'none'; ${images}; style-src 'unsafe-inline'; font-src data:; form-action 'none'`;
  const escaped = policy.replace(/"/g, "&quot;");
  return `<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${escaped}">`
    + `<meta name="referrer" content="no-referrer"><base target="_blank"></head><body>${html}</body></html>`;
}

function mailFrame(html, allowRemote) {
  // sandbox="" : no scripts, no same origin (the mail cannot reach the console or its token),
  // no forms, no popups, no top navigation.
  const frame = h("iframe", { class: "mail-body", sandbox: "", referrerpolicy: "no-referrer", title: "mail body" });
  frame.srcdoc = frameDocument(html, allowRemote);
  return frame;
}

async function attachmentItem(fileId) {
  try {
    const { file } = await api("GET", `/api/core/files/${encodeURIComponent(fileId)}`);
    return h("li", {}, h("a", { href: file.url, download: file.name, "data-file": file.id, rel: "noreferrer" }, file.name),
      ` (${file.content_type}, ${file.size} bytes)`);
  } catch (error) {
    return h("li", { class: "bad" }, `${fileId}: ${error.message}`);
  }
}

export async function mailView(id) {
  show(h("p", { class: "muted" }, "Loading…"));
  const { mail } = await api("GET", `/api/core/mail/${encodeURIComponent(id)}`);
  const headers = [["From", mail.from], ["To", (mail.to || []).join(", ")], ["Cc", (mail.cc || []).join(", ")],
    ["Subject", mail.subject], ["Date", when(mail.date || mail.created_at)], ["Message-ID", mail.message_id],
    ["Status", mail.status + (mail.error ? `: ${mail.error}` : "")], ["Team / account", `${mail.team} / ${mail.account}`]];
  const attachments = await Promise.all((mail.attachments || []).map(attachmentItem));
  const holder = h("div", { id: "mail-body" });
  const remote = /<img[^>]+src\s*=\s*["']?https?:/i.test(mail.body_html || "");
  const allow = h("button", { id: "allow-images", hidden: !remote, onclick: () => {
    holder.replaceChildren(mailFrame(mail.body_html, true));
    allow.hidden = true;
  } }, "Show remote images");
  if (mail.body_html) holder.append(mailFrame(mail.body_html, false));
  else holder.append(h("pre", {}, mail.body_text || "(no body)"));
  show(h("h2", {}, mail.subject || "(no subject)"),
    h("dl", { class: "headers" }, ...headers.filter(([, v]) => v).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    attachments.length ? h("div", {}, h("strong", {}, "Attachments"), h("ul", { id: "attachments" }, ...attachments)) : null,
    remote ? h("p", { class: "notice" }, "Remote images are blocked. ", allow) : null,
    holder,
    mail.body_html && mail.body_text ? h("details", {}, h("summary", {}, "Plain text"), h("pre", {}, mail.body_text)) : null);
}
