// A held journal note (docs/journal.md, "A pseudonym's number changed while its note
// waited"): the number behind the resident's pseudonym changed after the alarm, so the
// note waits for an administrator of the alarm's municipality to release it for the
// number it goes with, or to cancel it. The buttons are made only for a user the API
// lets decide (`decides`); the API refuses everyone else anyway (and another municipality's alarm
// is not even readable). The number typed is sent once and never kept in the page.
import { ask, buttons, dialogShell, textArea } from "./actions.js";
import { post } from "./api.js";
import { may, toast } from "./common.js";
import { el } from "./format.js";
import { t } from "./i18n.js";

/**
 * Whether `me` (from /api/v1/me) may release or cancel a held note: the server's own
 * `manage_residents` (core/tenancy.py), not a list of roles kept here. Not known: no
 * buttons (operators, who may not, are most of the page's users).
 */
export function decides(me) {
  return may(me, "manage_residents") === true;
}

function askRelease() {
  const { dialog, form } = dialogShell("held.releaseTitle");
  const wrap = el("div", "", "field");
  const input = el("input");
  // As on the register page: a password field, so whoever looks on does not read it.
  Object.assign(input, {
    id: "held-nid", type: "password", required: true, inputMode: "numeric",
    minLength: 11, maxLength: 11, pattern: "[0-9]{11}", autocomplete: "off",
  });
  const label = el("label", t("residents.nationalId"));
  label.htmlFor = input.id;
  wrap.append(label, input);
  form.append(el("p", t("held.releaseText")), wrap);
  const { cancel } = buttons(form, "held.releaseSubmit");
  const done = ask(dialog, form, cancel, () => ({ national_id: input.value.trim() }));
  input.focus();
  return done;
}

function askCancel() {
  const { dialog, form } = dialogShell("held.cancelTitle");
  const { wrap, area } = textArea("held.reason", false);
  area.maxLength = 200; // the API's bound
  form.append(el("p", t("held.cancelText")), wrap);
  const { cancel } = buttons(form, "held.cancelSubmit");
  cancel.textContent = t("held.keep"); // a plain "Avbryt" beside "Avbryt notatet" misleads
  const reason = () => area.value.trim();
  const done = ask(dialog, form, cancel, () => (reason() ? { reason: reason() } : {}));
  area.focus();
  return done;
}

/**
 * Ask, then send. `show(journal)` gets the server's answer (the note's state now); a
 * refusal is shown in the server's words and `show(null)` reads the alarm again: a
 * colleague may have decided the note first (409).
 */
async function decide(alarm, verb, show) {
  const body = await (verb === "release" ? askRelease() : askCancel());
  if (body === null) return;
  const res = await post(`/api/v1/alarms/${encodeURIComponent(alarm.id)}/journal/${verb}`, body);
  if (res.ok) {
    toast(t(`held.${verb}Done`));
    show(res.data);
    return;
  }
  if (res.status !== 401) toast(t("error.generic", { message: res.error.message ?? res.error.code }), true);
  show(null);
}

/** "Release…" and "Cancel…" for a held note of `alarm`. */
export function heldActions(alarm, show) {
  const box = el("div", "", "actions");
  for (const verb of ["release", "cancel"]) {
    const button = el("button", t(`held.${verb}`), verb === "cancel" ? "danger" : "");
    button.type = "button";
    button.dataset.journalAction = verb;
    button.addEventListener("click", () => decide(alarm, verb, show));
    box.append(button);
  }
  return box;
}
