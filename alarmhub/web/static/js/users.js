// Users and API tokens: lock someone out (disable), let them back in (enable), record
// their HPR number (the journal note's author), revoke a token. The API decides who may manage whom (an admin everyone, a municipality admin
// its own operators); this page only lists what the API returns for the caller.
import { get, post, request } from "./api.js";
import { startPage, toast } from "./common.js";
import { el } from "./format.js";
import { t } from "./i18n.js";

function button(text, onClick, label, className = "") {
  const b = el("button", text, className);
  b.type = "button";
  b.setAttribute("aria-label", label); // "Disable kari", not many identical "Disable" buttons
  b.addEventListener("click", onClick);
  return b;
}

function emptyRow(text, columns) {
  const td = el("td", text, "empty");
  td.colSpan = columns;
  const tr = el("tr");
  tr.append(td);
  return tr;
}

function userRow(u) {
  const tr = el("tr");
  tr.dataset.user = u.name;
  const actions = el("td");
  const verb = u.active ? "disable" : "enable";
  actions.append(button(t(`users.${verb}`), () => setActive(u, !u.active),
    `${t(`users.${verb}`)} ${u.name}`, u.active ? "danger" : ""));
  actions.append(button(t("users.setHpr"), () => setHpr(u), `${t("users.setHpr")} ${u.name}`));
  tr.append(
    el("td", u.name),
    el("td", t(`role.${u.role}`)),
    el("td", u.municipalities.join(", ") || t("all")),
    el("td", u.active ? t("users.active") : t("users.disabled"), u.active ? "" : "inactive"),
    el("td", u.hpr ?? "–", "hpr"),
    actions,
  );
  return tr;
}

function tokenRow(tok) {
  const tr = el("tr");
  tr.dataset.token = tok.id;
  const actions = el("td");
  if (tok.state === "active") {
    actions.append(button(t("users.revoke"), () => revoke(tok), `${t("users.revoke")} ${tok.id}`, "danger"));
  }
  tr.append(
    el("td", tok.id), el("td", tok.user), el("td", t(`token.${tok.state}`)),
    el("td", tok.expires_at ?? t("users.never")), actions,
  );
  return tr;
}

async function setActive(user, active) {
  if (!active && !window.confirm(t("users.confirmDisable", { name: user.name }))) return;
  const res = await post(`/api/v1/users/${encodeURIComponent(user.name)}/${active ? "enable" : "disable"}`);
  if (!res.ok) { toast(t("error.generic", { message: res.error.message }), true); return; }
  toast(t(active ? "users.enabledOk" : "users.disabledOk", { name: user.name }));
  await load();
}

async function setHpr(user) {
  const typed = window.prompt(t("users.promptHpr", { name: user.name }), user.hpr ?? "");
  if (typed === null) return; // cancelled
  const url = `/api/v1/users/${encodeURIComponent(user.name)}/hpr`;
  const res = typed.trim() === "" ? await request("DELETE", url) : await request("PUT", url, { hpr: typed });
  if (!res.ok) { toast(t("error.generic", { message: res.error.message }), true); return; }
  const hpr = res.data.hpr;
  toast(hpr ? t("users.hprSetOk", { name: user.name, hpr }) : t("users.hprRemovedOk", { name: user.name }));
  await load();
}

async function revoke(tok) {
  if (!window.confirm(t("users.confirmRevoke", { id: tok.id, name: tok.user }))) return;
  const res = await request("DELETE", `/api/v1/tokens/${encodeURIComponent(tok.id)}`);
  if (!res.ok) { toast(t("error.generic", { message: res.error.message }), true); return; }
  toast(t("users.revokedOk", { id: tok.id }));
  await load();
}

async function load() {
  const [users, tokens] = await Promise.all([get("/api/v1/users"), get("/api/v1/tokens")]);
  if (users.status === 403) { document.getElementById("users-denied").hidden = false; return; }
  if (!users.ok || !tokens.ok) {
    toast(t("error.generic", { message: (users.error ?? tokens.error).message }), true);
    return;
  }
  const userRows = users.data.map(userRow);
  document.querySelector("#users tbody").replaceChildren(...(userRows.length ? userRows : [emptyRow(t("users.empty"), 6)]));
  const tokenRows = tokens.data.map(tokenRow);
  document.querySelector("#tokens tbody").replaceChildren(...(tokenRows.length ? tokenRows : [emptyRow(t("users.noTokens"), 5)]));
}

await startPage();
await load();
