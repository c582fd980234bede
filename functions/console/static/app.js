// The console: sign in, then a hash router over the views. Plain ES modules, no build step.
import { accountsView } from "./accounts.js";
import { loadConfig, signIn, signOut, token, user } from "./auth.js";
import { composeView } from "./compose.js";
import { h, show } from "./dom.js";
import { mailView, mailboxView, outboxView } from "./mail.js";

let config = null;

function signInView() {
  document.getElementById("nav").hidden = true;
  document.getElementById("who").replaceChildren();
  const message = h("p", { class: "bad", id: "sign-in-error" });
  const form = h("form", { class: "grid", id: "sign-in" },
    h("label", {}, "Email"), h("input", { name: "email", type: "email", autocomplete: "username" }),
    h("label", {}, "Password"), h("input", { name: "password", type: "password", autocomplete: "current-password" }),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      await signIn(config, String(data.get("email")), String(data.get("password")));
      route();
    } catch (error) {
      message.textContent = error.message;
    }
  });
  show(h("h2", {}, "Sign in"), form, message);
}

const ROUTES = [
  [/^#\/accounts$/, accountsView],
  [/^#\/mail$/, mailboxView],
  [/^#\/mail\/([A-Za-z0-9_-]+)$/, mailView],
  [/^#\/outbox$/, outboxView],
  [/^#\/compose$/, composeView],
];

async function route() {
  if (!token()) return signInView();
  const me = user();
  document.getElementById("nav").hidden = false;
  document.getElementById("who").replaceChildren(me.email, " ",
    h("button", { onclick: () => { signOut(); route(); } }, "Sign out"));
  const hash = location.hash || "#/accounts";
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", hash.startsWith(link.hash));
  for (const [pattern, view] of ROUTES) {
    const match = pattern.exec(hash);
    if (!match) continue;
    try {
      await view(...match.slice(1));
    } catch (error) {
      if (error.status === 401) { signOut(); return signInView(); }
      show(h("p", { class: "bad" }, error.message));
    }
    return;
  }
  location.hash = "#/accounts";
}

window.addEventListener("hashchange", route);
loadConfig().then((loaded) => { config = loaded; route(); });
