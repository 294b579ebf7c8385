// One alarm in full: summary, timeline, device with its recent events and position,
// and the same actions (and keys) as the queue. Refreshes itself on live changes.
import { ACTION_KEYS, mayAct, runAction, showHelp, unavailableText } from "./actions.js";
import { get, serverNow } from "./api.js";
import { isTyping, startPage, toast } from "./common.js";
import { connectionView } from "./connection.js";
import { clearingText, dateTime, duration, el, exhaustedText, kindText, municipalityText, priorityBadge, shortDuration } from "./format.js";
import { decides, heldActions } from "./held.js";
import { t } from "./i18n.js";
import { openStream } from "./live.js";

const alarmId = decodeURIComponent(location.pathname.split("/").pop());
const RETRY_MS = 5000;
let current = null;
let me = null; // the signed-in user (/api/v1/me): which actions and held-note decisions to offer
let connection = null; // the banner (connection.js; this page has no badge), made in main()
let retryTimer = null;

/**
 * Read the alarm again. A failed read keeps what is shown, says so (the banner: a
 * colleague's acknowledgement may be missing) and is tried again; a 404 is final.
 */
async function load() {
  clearTimeout(retryTimer);
  const res = await get(`/api/v1/alarms/${encodeURIComponent(alarmId)}`);
  const box = document.getElementById("load-error");
  connection?.read(res.ok || res.status === 404);
  if (!res.ok) {
    box.textContent = res.status === 404 ? t("error.notfound") : t("error.generic", { message: res.error.message });
    box.hidden = false;
    if (res.status !== 404) retryTimer = setTimeout(load, RETRY_MS);
    return;
  }
  box.hidden = true;
  current = res.data;
  render(current);
}

function render(alarm) {
  document.getElementById("title").textContent = `${kindText(alarm.kind)} – ${alarm.device_id}`;
  document.title = `${kindText(alarm.kind)} – alarmhub`;
  renderActions(alarm);
  renderSummary(alarm);
  renderTimeline(alarm.timeline ?? []);
  renderDevice(alarm.device ?? null, alarm.device_id);
  renderEvents(eventsOf(alarm));
  renderPosition(eventsOf(alarm), alarm.scaip);
  renderScaip(alarm.scaip, alarm.state);
}

/**
 * The action buttons with their keys. A role the API does not let act (a municipality
 * administrator) sees them disabled with the reason beside them: enabled, each was
 * refused 403 only once clicked, and one who clicked "Kvitter" at night could believe
 * they had taken the alarm. The server's refusal stays the guard.
 */
function renderActions(alarm) {
  const box = document.getElementById("actions");
  const refused = !mayAct(me);
  const buttons = Object.entries(ACTION_KEYS).map(([key, action]) => {
    const button = el("button");
    button.type = "button";
    button.append(`${t(`action.${action}`)} `, el("kbd", key));
    button.setAttribute("aria-keyshortcuts", key);
    button.disabled = refused || (alarm.state === "resolved" && action !== "note");
    if (refused) button.setAttribute("aria-describedby", "actions-unavailable");
    button.addEventListener("click", () => act(action));
    return button;
  });
  if (refused) {
    const reason = el("p", unavailableText(me), "unavailable");
    reason.id = "actions-unavailable";
    buttons.push(reason);
  }
  box.replaceChildren(...buttons);
}

function facts(target, pairs) {
  const nodes = [];
  for (const [label, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    const dd = el("dd");
    if (value instanceof Node) dd.append(value); else dd.textContent = String(value);
    nodes.push(el("dt", label), dd);
  }
  document.getElementById(target).replaceChildren(...nodes);
}

function renderSummary(a) {
  const by = (who, at) => (at ? `${dateTime(at)}${who ? ` – ${who}` : ""}` : null);
  const waited = a.acknowledged_at ? Date.parse(a.acknowledged_at) : serverNow();
  facts("summary", [
    [t("col.priority"), priorityBadge(a.priority)],
    [t("col.state"), t(`state.${a.state}`)],
    [t("col.kind"), kindText(a.kind)],
    [t("col.municipality"), municipalityText(a.municipality)],
    [t("col.raised"), dateTime(a.raised_at)],
    [t("col.age"), duration((waited - Date.parse(a.raised_at)) / 1000)],
    [t("col.repeats"), a.repeat_count],
    [t("col.escalation"), a.escalation_level],
    [t("detail.ackBy"), by(a.acknowledged_by, a.acknowledged_at)],
    [t("detail.dispatched"), by(null, a.dispatched_at)],
    [t("detail.onSite"), by(null, a.on_site_at)],
    [t("detail.resolvedBy"), by(a.resolved_by, a.resolved_at)],
    [t("detail.outcome"), a.outcome ? t(`outcome.${a.outcome}`) : null],
    [t("detail.cause"), choiceText(a, "cause", "cause_label", a.cause_text)],
    [t("detail.action"), choiceText(a, "action_taken", "action_label", a.action_text)],
    [t("detail.nationalId"), a.national_id_masked],
    [t("detail.journal"), a.journal ? journalText(a.journal, a) : null],
    [t("detail.suppressedBy"), a.suppressed_by],
    [t("timeline.event"), a.clearing_event ? clearingText(a) : null],
    [t("timeline.escalation_exhausted"), a.escalation_exhausted_at ? exhaustedText(a) : null],
  ]);
}

/** A recorded cause or action: its text from the resolving timeline entry, and the free text. */
function choiceText(alarm, field, labelField, free) {
  if (!alarm[field] && !free) return null;
  const resolved = (alarm.timeline ?? []).find((e) => e.type === "resolved" && e.detail?.[field]);
  const label = resolved?.detail?.[labelField] ?? alarm[field];
  return [label, free].filter(Boolean).join(" – ");
}

/** The journal export: its state and reason, then when it was queued, sent and finished,
 *  and while it is retried, how many attempts and the last one's error. A held note
 *  says who decides it: it is sent to nobody until then. Those who may decide get
 *  its two actions (held.js); the API refuses them to everyone else. */
function journalText(journal, alarm) {
  const state = t(`journal.${journal.state}`);
  const box = el("span");
  box.dataset.journalState = journal.state;
  box.append(journal.reason ? `${state} (${journal.reason})` : state);
  const lines = [
    journal.created_at && `${t("journal.queuedAt")} ${dateTime(journal.created_at)}`,
    journal.sent_at && `${t("journal.sentAt")} ${dateTime(journal.sent_at)}`,
    journal.finished_at && `${t("journal.finishedAt")} ${dateTime(journal.finished_at)}`,
    journal.last_error && t("journal.retrying", { attempts: journal.attempts, error: journal.last_error }),
    journal.state === "held" && t("journal.heldHint"),
  ];
  for (const line of lines.filter(Boolean)) box.append(el("div", line, "hint"));
  if (journal.state === "held" && decides(me)) box.append(heldActions(alarm, showJournal));
  return box;
}

/** A release or cancel answered with the note's state: shown as it is; refused: read again. */
function showJournal(journal) {
  if (!journal) { load(); return; }
  current = { ...current, journal };
  renderSummary(current);
}

function detailText(detail) {
  if (!detail || typeof detail !== "object") return detail ? String(detail) : "";
  if (detail.cause_label || detail.action_label) {
    return [
      detail.cause_label && `${t("detail.cause")}: ${[detail.cause_label, detail.cause_text].filter(Boolean).join(" – ")}`,
      detail.action_label && `${t("detail.action")}: ${[detail.action_label, detail.action_text].filter(Boolean).join(" – ")}`,
      detail.note,
    ].filter(Boolean).join(" · ");
  }
  if (detail.note) return detail.note;
  if (typeof detail.snu === "number") return answerText(detail);
  return Object.entries(detail).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
}

function renderTimeline(entries) {
  const items = entries.map((entry) => {
    const li = el("li");
    li.dataset.type = entry.type;
    const time = el("time", dateTime(entry.at));
    time.dateTime = entry.at;
    li.append(time, el("strong", t(`timeline.${entry.type}`)));
    if (entry.actor) li.append(` – ${entry.actor}`);
    const text = detailText(entry.detail);
    if (text) li.append(el("div", text, "hint"));
    return li;
  });
  document.getElementById("timeline").replaceChildren(...items);
}

function renderDevice(device, deviceId) {
  const d = device ?? { id: deviceId };
  facts("device", [
    [t("field.id"), d.id],
    [t("field.label"), d.label],
    [t("field.kind"), d.kind ? t(`kind.${d.kind}`) : null],
    [t("field.municipality"), d.municipality ? municipalityText(d.municipality) : null],
    [t("field.heartbeat"), d.heartbeat_interval_s ? shortDuration(d.heartbeat_interval_s) : null],
    [t("field.active"), d.active === undefined ? null : t(d.active ? "devices.active" : "devices.inactive")],
  ]);
}

/**
 * The device's recent events, one row each, newest first. The API lists messages
 * (`recent_events`), each carrying the events decoded from it; a rejected message has
 * none and is shown with its reason, so the operator sees that the device did send.
 */
function eventsOf(alarm) {
  const messages = alarm.recent_events ?? alarm.device?.recent_events ?? [];
  const rows = [];
  for (const msg of messages) {
    const events = Array.isArray(msg.events) ? msg.events : [];
    if (!events.length) rows.push({ ts: msg.received_at, type: msg.verdict, fields: msg.reason ? { reason: msg.reason } : {} });
    for (const ev of events) rows.push({ ts: ev.ts ?? msg.received_at, type: ev.type, fields: ev.fields ?? fieldsOf(ev) });
  }
  return rows.sort((x, y) => Date.parse(y.ts) - Date.parse(x.ts));
}

/** An event without a `fields` object: everything but its identity is a field. */
function fieldsOf(ev) {
  const { type, ts, device_id: _d, msg_id: _m, received_at: _r, verdict: _v, ...rest } = ev;
  return rest;
}

function renderEvents(events) {
  const rows = events.map((ev) => {
    const tr = el("tr");
    tr.append(el("td", dateTime(ev.ts ?? ev.at ?? ev.received_at)), el("td", ev.type ?? ""), el("td", detailText(ev.fields ?? {})));
    return tr;
  });
  if (!rows.length) {
    const td = el("td", t("detail.noEvents"));
    td.colSpan = 3;
    const tr = el("tr");
    tr.append(td);
    rows.push(tr);
  }
  document.querySelector("#events tbody").replaceChildren(...rows);
}

/**
 * What a SCAIP device sent about this alarm (the API's `scaip`, docs/scaip.md): the numbers
 * to call back, its own texts, its reference, and how it was told to call. Voice itself
 * stays with the centre's telephony.
 */
function renderScaip(s, state) {
  const box = document.getElementById("scaip");
  if (!s) { box.replaceChildren(); return; }
  const lge = s.lge ?? {};
  facts("scaip", [
    [t("scaip.callbacks"), s.crd?.length ? callbackList(s.crd) : null],
    [t("scaip.voice"), s.voice ? voiceText(s.voice) : (s.answer_policy === "hold_until_taken" && state === "open" ? t("scaip.held") : null)],
    [t("scaip.position"), lge.geo || lge.gga ? [lge.geo ?? lge.gga, lge.tim && `(${lge.tim})`].filter(Boolean).join(" ") : null],
    [t("scaip.status"), s.stt],
    [t("scaip.location"), s.lte],
    [t("scaip.info"), s.ite],
    [t("scaip.ref"), s.ref],
  ]);
}

/** Callback addresses one per line, as sent (`gsm:+47…`, `sip:…`): text, never links. */
function callbackList(crd) {
  const list = el("ul", "", "plain");
  for (const address of crd) list.append(el("li", address));
  return list;
}

/** "Duplex voice (mre 1) · call +4712345678 (cre 62)". */
function voiceText(v) {
  const parts = [];
  if (v.mre != null) parts.push(`${t(`scaip.mre.${v.mre}`)} (mre ${v.mre})`);
  if (v.cre != null) {
    const how = v.cre <= 60 ? t("scaip.cre.window", { n: v.cre }) : t(`scaip.cre.${v.cre}`, { tnu: v.tnu ?? "?" });
    parts.push(`${how} (cre ${v.cre})`);
  }
  if (v.tnu && v.cre !== 62) parts.push(`tnu ${v.tnu}`);
  return parts.join(" · ");
}

/** A timeline `answered` entry: "snu 0 handled · Duplex voice (mre 1) · …". */
function answerText(d) {
  const snu = `snu ${d.snu} ${t(`scaip.snu.${d.snu}`)}`;
  return [snu, voiceText(d), d.ref && `ref ${d.ref}`].filter(Boolean).join(" · ");
}

/** The newest fix with coordinates: position, its accuracy, and a plain link to a map. */
function renderPosition(events, scaip) {
  const box = document.getElementById("position");
  let fix = events
    .map((ev) => ({ ev, f: ev.fields ?? {} }))
    .filter(({ f }) => typeof f.lat === "number" && typeof f.lon === "number")
    .sort((x, y) => Date.parse(y.ev.ts ?? 0) - Date.parse(x.ev.ts ?? 0))[0];
  // A SCAIP device's `lge`, read as coordinates by the API: shown like any other fix.
  if (!fix && scaip?.position) fix = { ev: { ts: scaip.lge?.tim }, f: scaip.position };
  if (!fix) { box.replaceChildren(el("p", t("detail.noPosition"), "hint")); return; }
  const { lat, lon, accuracy_m: accuracy } = fix.f;
  const dl = el("dl", "", "facts");
  dl.append(el("dt", t("detail.coordinates")), el("dd", `${lat.toFixed(5)}, ${lon.toFixed(5)}`));
  if (accuracy != null) dl.append(el("dt", t("detail.accuracy")), el("dd", `± ${Math.round(accuracy)} m`));
  if (fix.ev.ts && !Number.isNaN(Date.parse(fix.ev.ts))) dl.append(el("dt", t("field.time")), el("dd", dateTime(fix.ev.ts)));
  const link = el("a", t("detail.map"));
  link.href = `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=17/${lat}/${lon}`;
  link.rel = "noopener noreferrer"; // the alarm's address must not leak to the map site
  link.target = "_blank";
  const para = el("p");
  para.append(link);
  box.replaceChildren(dl, para);
}

async function act(action) {
  if (!current) return;
  if (!mayAct(me)) { toast(unavailableText(me), true); return; } // a key: said, not sent
  // Done or refused (a colleague first, the store down): read the alarm as it is now.
  if (await runAction(current, action)) await load();
}

function onKey(event) {
  if (isTyping(event)) return;
  if (event.key === "Escape") location.assign("/");
  else if (event.key === "?") showHelp(me);
  else if (ACTION_KEYS[event.key]) act(ACTION_KEYS[event.key]);
  else return;
  event.preventDefault();
}

async function main() {
  me = await startPage();
  document.addEventListener("keydown", onKey);
  connection = connectionView();
  await load();
  document.getElementById("title").focus();
  // The detail follows the alarm live too: a colleague's acknowledgement or resolution
  // shows here, and a stream that is not live shows the same banner as the queue.
  openStream({
    alarm: (a) => { if (a.id === alarmId) load(); },
    resync: load,
    status: connection.stream,
  });
  // The "waited" figure ticks while nobody has acknowledged.
  setInterval(() => { if (current && !current.acknowledged_at) renderSummary(current); }, 1000);
}

main().catch((err) => toast(String(err), true));
