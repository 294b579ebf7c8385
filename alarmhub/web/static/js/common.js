// What every signed-in page shares: the header (who, language, log out) and a toast for results.
import { get, post } from "./api.js";
import { lang, setLang, t, translatePage } from "./i18n.js";

/** Translate the page, wire the header, and return the signed-in user (or null). */
export async function startPage() {
  translatePage();
  wireLanguageToggle();
  wireLogout();
  markCurrentNav();
  const me = await get("/api/v1/me");
  if (me.ok && me.data) {
    const who = document.getElementById("who");
    if (who) who.textContent = `${me.data.name ?? ""} (${me.data.role ?? ""})`;
    hideUnpermitted(me.data);
    return me.data;
  }
  return null;
}

/**
 * Whether the signed-in user `me` (from /api/v1/me) may do `permission` (a value of
 * core/tenancy.py `Permission`, e.g. "act_on_alarms"): the server's own answer,
 * `me.permissions`, so no page keeps a copy of which role may what. null when that is
 * not known (the read failed): each caller says what not knowing means for it.
 */
export function may(me, permission) {
  if (!Array.isArray(me?.permissions)) return null;
  return me.permissions.includes(permission);
}

/** Hide links the user cannot use (the API refuses them anyway; this only avoids dead ends). */
function hideUnpermitted(me) {
  for (const node of document.querySelectorAll("[data-needs-permission]")) {
    node.hidden = may(me, node.dataset.needsPermission) === false;
  }
}

function wireLanguageToggle() {
  const button = document.getElementById("lang-toggle");
  if (!button) return;
  button.addEventListener("click", () => {
    setLang(lang() === "nb" ? "en" : "nb");
    // A reload re-renders every text (including live rows) in the new language.
    location.reload();
  });
}

function wireLogout() {
  const button = document.getElementById("logout");
  if (!button) return;
  button.addEventListener("click", async () => {
    await post("/logout");
    location.assign("/login");
  });
}

function markCurrentNav() {
  const here = location.pathname.startsWith("/alarms/") ? "/" : location.pathname;
  for (const link of document.querySelectorAll("header.top nav a")) {
    if (link.getAttribute("href") === here) link.setAttribute("aria-current", "page");
  }
}

let toastTimer = null;

/** Show a short message; errors stay longer. The toast is a live region, so it is read out too. */
export function toast(message, isError = false) {
  const box = document.getElementById("toast");
  if (!box) return;
  box.textContent = message;
  box.classList.toggle("error", isError);
  box.setAttribute("role", isError ? "alert" : "status");
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, isError ? 10000 : 4000);
}

/**
 * True when a key press is not meant for the page's shortcuts: it has a modifier (browser
 * shortcuts), a dialog is open, the user is typing in a field, or Enter/space would press
 * a focused button or link (that must keep doing what it says).
 */
export function isTyping(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return true;
  if (document.querySelector("dialog[open]")) return true;
  const target = event.target;
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) return true;
  return ["BUTTON", "A"].includes(target.tagName) && (event.key === "Enter" || event.key === " ");
}
