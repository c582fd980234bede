// Compose and send, with attachments uploaded first through the files API (progress bars).
import { api, query, uploadFile } from "./api.js";
import { h, show } from "./dom.js";

export async function composeView() {
  const { accounts } = await api("GET", "/api/core/mail/accounts");
  const form = h("form", { class: "grid", id: "compose" },
    h("label", {}, "From account"),
    h("select", { name: "from" }, ...accounts.map((a) =>
      h("option", { value: JSON.stringify([a.team, a.account]) }, `${a.account} (${a.team}) – ${a.configuration.mail_from}`))),
    h("label", {}, "To"), h("input", { name: "to", placeholder: "a@example.com, b@example.com" }),
    h("label", {}, "Cc"), h("input", { name: "cc" }),
    h("label", {}, "Subject"), h("input", { name: "subject" }),
    h("label", {}, "Text"), h("textarea", { name: "body_text" }),
    h("label", {}, "Attachments"), h("input", { type: "file", name: "files", multiple: true }),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "send" }, "Send")));
  const progress = h("div", { id: "uploads" });
  const out = h("div", { id: "send-result" });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const [team, account] = JSON.parse(String(data.get("from")));
    out.replaceChildren();
    try {
      const files = form.querySelector('input[type="file"]').files;
      const ids = [];
      for (const file of files) {
        const bar = h("progress", { max: 1, value: 0 });
        progress.append(h("div", {}, bar, " ", file.name));
        const stored = await uploadFile(file, team, (share) => { bar.value = share; });
        ids.push(stored.id);
      }
      const { mail } = await api("POST", `/api/core/mail/send/${encodeURIComponent(account)}${query({ team })}`, {
        to: data.get("to"), cc: data.get("cc"), subject: data.get("subject"),
        body_text: data.get("body_text"), attachments: ids,
      });
      out.replaceChildren(h("p", { class: "ok", "data-test": "sent" }, `Sent (${mail.status}): ${mail.message_id}`));
    } catch (error) {
      out.replaceChildren(h("p", { class: "bad" }, error.field ? `${error.field}: ${error.message}` : error.message));
    }
  });
  show(h("h2", {}, "Compose"), form, progress, out);
}
