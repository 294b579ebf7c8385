// Operator actions on one alarm, shared by the queue and the detail page.
// Every action is a POST with the CSRF header; a 409 says who got there first.
import { get, post } from "./api.js";
import { may, toast } from "./common.js";
import { el } from "./format.js";
import { kindText, t } from "./i18n.js";
import { askVoice } from "./voice.js";

export const OUTCOMES = ["helped", "false_alarm", "no_response_dispatched", "technical"];

/** Keys that trigger an action, as documented in the help dialog and the operator guide. */
export const ACTION_KEYS = {
  a: "acknowledge", n: "note", r: "resolve", e: "escalate", d: "dispatch", o: "on-site",
};

/**
 * Whether the signed-in user (`me`, from /api/v1/me) may act on alarms: the server's own
 * `act_on_alarms` (core/tenancy.py), not a list of roles kept here, which could drift and
 * hide from an operator the action that takes an alarm. A municipality administrator reads
 * alarms but may not take them. Not knowing what the user may do (that read failed) is not
 * a refusal: the server decides, and an operator must not be locked out of an alarm by a
 * blip.
 */
export function mayAct(me) {
  return may(me, "act_on_alarms") !== false;
}

/** Why the actions are unavailable to `me`, for the page and for a key pressed anyway. */
export function unavailableText(me) {
  return t("action.unavailable", { role: me?.role ?? "" });
}

/**
 * Run `action` on `alarm`; asks for a note or outcome first when the action needs one.
 * The API's answer ({ok, status, data, error}), already reported to the operator, or
 * null when the operator cancelled the dialog.
 */
export async function runAction(alarm, action) {
  let body = {};
  if (action === "note") {
    const note = await askNote();
    if (note === null) return null;
    body = { note };
  } else if (action === "acknowledge" && isHeld(alarm)) {
    const voice = await askVoice(alarm.scaip.configured_voice, { ...dialogShell("voice.title"), buttons, ask });
    if (voice === null) return null;
    body = { voice };
  } else if (action === "resolve") {
    const answer = await askOutcome(await choicesFor(alarm.kind));
    if (answer === null) return null;
    // Only what was given: the API refuses empty strings.
    body = Object.fromEntries(Object.entries(answer).filter(([, v]) => v));
  }
  const path = action === "note" ? "notes" : action;
  const res = await post(`/api/v1/alarms/${encodeURIComponent(alarm.id)}/${path}`, body);
  reportResult(res, alarm, action);
  return res;
}

/** A SCAIP device held until an operator takes its alarm: taking it chooses how it calls. */
function isHeld(alarm) {
  return alarm.state === "open" && alarm.scaip?.answer_policy === "hold_until_taken";
}

function reportResult(res, alarm, action) {
  const label = t(`action.${action}`);
  if (res.ok) {
    toast(t("action.done", { action: label, kind: kindText(alarm.kind), device: alarm.device_id }));
  } else if (res.status === 409) {
    const holder = res.error.holder ?? "?";
    toast(t("conflict", { holder, message: res.error.message ?? res.error.code }), true);
  } else if (res.status === 403) {
    toast(t("error.forbidden"), true);
  } else if (res.status !== 401) {
    toast(t("error.generic", { message: res.error.message ?? res.error.code }), true);
  }
}

// --- dialogs (held.js asks with these too) ------------------------------------
// Native <dialog> with showModal(): it traps focus, closes on Escape and returns
// focus to where it was, which is what a keyboard-only operator needs.

export function dialogShell(titleKey) {
  const dialog = el("dialog");
  const form = el("form");
  form.method = "dialog";
  const id = `dlg-${Math.random().toString(36).slice(2)}`;
  const title = el("h2", t(titleKey));
  title.id = id;
  dialog.setAttribute("aria-labelledby", id);
  form.append(title);
  dialog.append(form);
  return { dialog, form };
}

export function buttons(form, submitKey) {
  const menu = el("menu");
  const cancel = el("button", t("dialog.cancel"));
  cancel.type = "button";
  cancel.value = "cancel";
  const submit = el("button", t(submitKey), "primary");
  submit.type = "submit";
  submit.value = "ok";
  menu.append(cancel, submit);
  form.append(menu);
  return { cancel, submit };
}

/** Show `dialog`, resolve with `read()` when submitted or null when cancelled. */
export function ask(dialog, form, cancel, read, validate = () => true) {
  document.body.append(dialog);
  return new Promise((resolve) => {
    let result = null;
    cancel.addEventListener("click", () => dialog.close());
    form.addEventListener("submit", (event) => {
      if (!validate()) { event.preventDefault(); return; }
      result = read();
    });
    dialog.addEventListener("close", () => { dialog.remove(); resolve(result); });
    dialog.showModal();
  });
}

export function textArea(labelKey, required) {
  const wrap = el("div", "", "field");
  const id = `f-${Math.random().toString(36).slice(2)}`;
  const label = el("label", t(labelKey));
  label.htmlFor = id;
  const area = el("textarea");
  area.id = id;
  area.maxLength = 2000;
  area.required = required;
  wrap.append(label, area);
  return { wrap, area };
}

export function askNote() {
  const { dialog, form } = dialogShell("note.title");
  const { wrap, area } = textArea("note.text", true);
  form.append(wrap);
  const { cancel } = buttons(form, "dialog.save");
  const done = ask(dialog, form, cancel, () => area.value.trim(), () => area.value.trim() !== "");
  area.focus();
  return done;
}

let choicesCache = null;

/** The cause and action-taken choices for an alarm kind, from the rules file (fetched once). */
export async function choicesFor(kind) {
  if (!choicesCache) {
    const res = await get("/api/v1/resolution-choices");
    if (!res.ok) return { causes: [], actions: [] };
    choicesCache = res.data;
  }
  return choicesCache.kinds[kind] ?? choicesCache.default;
}

/**
 * A <select> of coded choices with an empty first option, and a free-text field after it.
 * Digits pick the n-th choice directly (as in the outcome list), Enter submits the dialog.
 */
function choiceField(name, labelKey, textKey, choices) {
  const wrap = el("div", "", "field");
  const select = el("select");
  select.id = `resolve-${name}`;
  select.name = name;
  const label = el("label", t(labelKey));
  label.htmlFor = select.id;
  const none = el("option", t("resolve.none"));
  none.value = "";
  select.append(none);
  choices.forEach((choice, i) => {
    const option = el("option", `${i + 1}. ${choice.text}`);
    option.value = choice.code;
    select.append(option);
  });
  select.addEventListener("keydown", (event) => {
    const index = Number(event.key);
    if (index >= 1 && index <= choices.length) {
      select.selectedIndex = index;
      event.preventDefault();
    } else if (event.key === "Enter") {
      event.preventDefault();
      select.form.requestSubmit();
    }
  });
  const input = el("input");
  input.type = "text";
  input.id = `resolve-${name}-text`;
  input.maxLength = 500;
  input.setAttribute("aria-label", t(textKey));
  input.placeholder = t(textKey);
  wrap.append(label, select, input);
  return { wrap, select, input };
}

export function askOutcome(choices = { causes: [], actions: [] }) {
  const { dialog, form } = dialogShell("resolve.title");
  const fieldset = el("fieldset");
  fieldset.append(el("legend", t("resolve.outcome")));
  OUTCOMES.forEach((outcome, i) => {
    const label = el("label");
    const radio = el("input");
    radio.type = "radio";
    radio.name = "outcome";
    radio.value = outcome;
    radio.required = true;
    radio.checked = i === 0;
    label.append(radio, ` ${i + 1}. ${t(`outcome.${outcome}`)}`);
    fieldset.append(label);
  });
  // Digits pick an outcome directly: r then 2 then Enter resolves as a false alarm.
  fieldset.addEventListener("keydown", (event) => {
    const index = Number(event.key) - 1;
    if (index >= 0 && index < OUTCOMES.length) {
      const radio = fieldset.querySelectorAll("input")[index];
      radio.checked = true;
      radio.focus();
      event.preventDefault();
    }
  });
  const cause = choiceField("cause", "resolve.cause", "resolve.causeText", choices.causes);
  const taken = choiceField("action", "resolve.action", "resolve.actionText", choices.actions);
  const { wrap, area } = textArea("resolve.note", false);
  form.append(fieldset, cause.wrap, taken.wrap, wrap);
  const { cancel } = buttons(form, "resolve.submit");
  const read = () => ({
    outcome: form.querySelector("input[name=outcome]:checked").value,
    note: area.value.trim(),
    cause: cause.select.value,
    cause_text: cause.input.value.trim(),
    action_taken: taken.select.value,
    action_text: taken.input.value.trim(),
  });
  const done = ask(dialog, form, cancel, read);
  fieldset.querySelector("input:checked").focus();
  return done;
}

/**
 * The shortcut help (`?`) for `me`: the action keys, and those of the actions' dialogs,
 * only for a user who may act (`mayAct`); one who may not is told why instead, in the
 * words a pressed action key gets, rather than shown keys that would only say so.
 */
export function showHelp(me) {
  const { dialog, form } = dialogShell("help.title");
  const table = el("table");
  const acting = mayAct(me) ? [
    ...Object.entries(ACTION_KEYS).map(([key, action]) => [key, t(`action.${action}`)]),
    ["1–4", `${t("resolve.title")}: ${t("resolve.outcome")}`],
    ["Tab, 1–9", `${t("resolve.title")}: ${t("resolve.cause")} / ${t("resolve.action")}`],
    ["a, 1–3, Tab, 1–3", `${t("voice.title")}: ${t("voice.mre")} / ${t("voice.cre")}`],
  ] : [];
  const rows = [
    ["j / ↓, k / ↑", t("help.move")], ["Enter", t("help.open")],
    ...acting,
    ["Esc", t("help.back")], ["?", t("help.help")],
  ];
  for (const [keys, what] of rows) {
    const tr = el("tr");
    const th = el("th");
    th.scope = "row";
    th.append(el("kbd", keys));
    tr.append(th, el("td", what));
    table.append(tr);
  }
  form.append(table);
  if (!acting.length) form.append(el("p", unavailableText(me), "unavailable"));
  const menu = el("menu");
  const close = el("button", t("help.close"), "primary");
  close.type = "submit";
  menu.append(close);
  form.append(menu);
  document.body.append(dialog);
  dialog.addEventListener("close", () => dialog.remove());
  dialog.showModal();
  close.focus();
}
