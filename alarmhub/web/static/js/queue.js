// The operators' live queue: loads open and acknowledged alarms, applies live changes
// without a reload, keeps the order "most urgent first, then oldest", ticks ages every
// second, and is driven entirely from the keyboard.
import { ACTION_KEYS, mayAct, runAction, showHelp, unavailableText } from "./actions.js";
import { get, serverNow } from "./api.js";
import { isTyping, startPage, toast } from "./common.js";
import { connectionView } from "./connection.js";
import { clearingText, dateTime, duration, el, exhaustedText, kindText, municipalityText, priorityBadge, priorityText, shortDuration } from "./format.js";
import { lang, t } from "./i18n.js";
import { openStream } from "./live.js";
import { DEFAULT_SLA, ageSeconds, compareAlarms, inQueue, isNewCritical, isOverdue, tabTitle } from "./queue-model.js";
import { QueueWindows, STATES, maxRowsOf } from "./queue-window.js";
import { readSilences } from "./silences.js";
import { playAlert, soundReady, unlockSound } from "./sound.js";

const RECONCILE_MS = 60_000; // a full reload now and then: the queue must never silently drift

const state = {
  alarms: new Map(), // id -> alarm, only those in the queue and shown (queue-window.js)
  shown: { open: 0, acknowledged: 0 }, // how many of `alarms` are in each state
  rows: new Map(), // id -> <tr>
  selectedId: null,
  loaded: false,
  loading: false,
  buffer: [], // live changes that arrived while a snapshot was being read
  again: false, // a read was asked for while one ran: run another after it
  readOk: true, // the last read of the queue succeeded
  sla: readSla(),
  labels: new Map(), // device id -> label
  fresh: new Set(), // ids that just arrived live: their rows flash once
  askedLabels: new Set(), // device ids whose label was looked for once already
  revs: new Map(), // id -> the oldest `rev` still news (resolved alarms too): older copies are ignored
};

let connection = null; // the badge and banner (connection.js), made in main()
let me = null; // the signed-in user (/api/v1/me): whether the action keys are theirs

// What of a long queue is shown: the most urgent `?max_rows` (25,000) of each state, and
// the count of the rest (queue-window.js).
const windows = new QueueWindows(maxRowsOf(new URLSearchParams(location.search).get("max_rows")), {
  shown: (s) => state.shown[s] ?? 0,
  blocked: () => state.loading || !state.loaded,
  take: (alarms) => { for (const alarm of alarms) apply(alarm, false); render(); },
  counted: () => render(),
});

const tbody = document.querySelector("#queue tbody");
const emptyRow = document.getElementById("queue-empty");

/** Targets come from the server's rules file (rendered into the page), else the defaults. */
function readSla() {
  const meta = document.querySelector('meta[name="alarmhub-sla"]');
  try {
    const parsed = JSON.parse(meta?.content ?? "{}");
    return Object.keys(parsed).length ? parsed : DEFAULT_SLA;
  } catch {
    return DEFAULT_SLA;
  }
}

// --- data ------------------------------------------------------------------

/**
 * Read the queue afresh. Live changes arriving meanwhile are buffered and replayed on
 * top: each alarm ends at its latest change, whether that came before or after the read.
 *
 * Whatever goes wrong, the page goes on: a failed read is shown (the banner), keeps the
 * list it had with the changes that came meanwhile, and is tried again soon, backing
 * off; a read asked for while one runs (a `resync` during the reconcile) runs after it.
 * A read that threw once left `loading` set for good: every later change was buffered
 * and never shown, and no read ever ran again, under a badge that still said "Live".
 */
async function reload() {
  if (state.loading) {
    state.again = true;
    return null;
  }
  state.loading = true;
  state.buffer = [];
  let result;
  try {
    result = await readQueue();
  } catch (err) {
    result = { ok: false, message: String(err) };
  }
  state.loading = false;
  if (result.ok) {
    takeSnapshot(result);
  } else {
    if (state.readOk) toast(t("error.generic", { message: result.message }), true);
    // What came while reading is newer than the list kept: show it rather than drop it.
    if (state.loaded) for (const alarm of state.buffer.splice(0)) apply(alarm, true);
    render();
  }
  state.readOk = result.ok;
  connection.read(result.ok);
  retryRead(result.ok);
  if (state.again) {
    state.again = false;
    return reload();
  }
  return result.seq ?? null;
}

function readQueue() {
  return windows.read();
}

function takeSnapshot({ alarms, windows: read }) {
  const before = state.alarms;
  state.alarms = new Map(alarms.map((a) => [a.id, a]));
  windows.replace(read); // before the changes buffered meanwhile: they go by its bounds
  state.shown = Object.fromEntries(STATES.map((s) => [s, 0]));
  for (const alarm of alarms) state.shown[alarm.state] += 1;
  for (const alarm of alarms) noteRev(alarm); // buffered changes older than the read are ignored
  if (!windows.partial()) for (const id of before.keys()) if (!state.alarms.has(id)) noteLeft(id);
  const firstLoad = !state.loaded;
  state.loaded = true;
  for (const alarm of state.buffer.splice(0)) apply(alarm, false);
  if (!firstLoad && [...state.alarms.values()].some((a) => isNewCritical(before.get(a.id), a))) alert();
  render();
  learnLabels();
}

const READ_RETRY_MIN_MS = 2000;
const READ_RETRY_MAX_MS = 30_000;
let readRetry = { timer: null, ms: READ_RETRY_MIN_MS };

/** After a failed read, the next in 2 s, 4 s, … at most 30 s; after a good one, none. */
function retryRead(ok) {
  clearTimeout(readRetry.timer);
  if (ok) {
    readRetry = { timer: null, ms: READ_RETRY_MIN_MS };
    return;
  }
  readRetry.timer = setTimeout(reload, readRetry.ms);
  readRetry.ms = Math.min(readRetry.ms * 2, READ_RETRY_MAX_MS);
}

/** One live change: update, add or (when resolved) remove the alarm. */
function onChange(alarm) {
  if (state.loading || !state.loaded) {
    state.buffer.push(alarm);
    return;
  }
  apply(alarm, true);
  scheduleRender();
}

function apply(alarm, announceIt) {
  // Copies come by two paths, the stream and an action's answer, not always in order:
  // an answer held up on a slow link put back an alarm a colleague had resolved since.
  // The alarm's `rev` says which is newer; an older copy than one seen is ignored.
  const seen = state.revs.get(alarm.id);
  if (seen !== undefined && alarm.rev != null && alarm.rev < seen) return;
  noteRev(alarm);
  const before = state.alarms.get(alarm.id);
  // Past the window of a long queue (less urgent than every alarm shown of its state) it
  // is counted, not shown: it comes into view as the queue shrinks (queue-window.js).
  const shown = inQueue(alarm) && (before !== undefined || windows.admits(alarm));
  if (before) state.shown[before.state] -= 1;
  if (shown) {
    state.alarms.set(alarm.id, alarm);
    state.shown[alarm.state] += 1;
  } else {
    state.alarms.delete(alarm.id);
  }
  windows.changed(before, alarm, inQueue(alarm));
  if (!announceIt || !shown) return;
  if (!before && inQueue(alarm)) { announce(alarm); state.fresh.add(alarm.id); }
  if (isNewCritical(before, alarm)) alert();
  // An unknown device id (an unregistered device's alarm) is asked about once: each
  // alarm of a storm of them asked for the whole device list again.
  if (!state.labels.has(alarm.device_id) && !state.askedLabels.has(alarm.device_id)) {
    state.askedLabels.add(alarm.device_id);
    learnLabels();
  }
}

const REVS_KEPT = 20_000;

/**
 * An alarm shown before a read that read the whole queue (none left out of view) and no
 * longer holds it: it left the queue after every copy seen before the read, at a `rev`
 * the page does not know. A copy no newer than the newest seen is older than the read
 * and must not bring it back. The read came before the stream's word of it (a slow or
 * silent stream) and an action's answer then arrived, carrying the rev of the
 * acknowledgement the stream had already brought: equal, not older, it was applied, and
 * the resolved alarm stood in the queue as the operator's until the stream's resolution
 * came, or the next read a minute later. `revs` holds the oldest rev still news: that
 * seen, or one past it here.
 */
function noteLeft(id) {
  const seen = state.revs.get(id);
  if (seen !== undefined) state.revs.set(id, seen + 1);
}

/**
 * The newest `rev` seen of each alarm, resolved ones too; pruned to the queue when long.
 * Pruned only when it holds twice the queue's alarms: with more than REVS_KEPT alarms
 * shown (a storm: the page holds up to 25,000 of each state) nothing could be pruned,
 * and every change walked the whole map, 5,000 times for one read of 25,000.
 */
function noteRev(alarm) {
  if (alarm.rev == null) return;
  state.revs.set(alarm.id, Math.max(alarm.rev, state.revs.get(alarm.id) ?? alarm.rev));
  if (state.revs.size <= Math.max(REVS_KEPT, 2 * state.alarms.size)) return;
  for (const id of state.revs.keys()) if (!state.alarms.has(id)) state.revs.delete(id);
}

/**
 * Device labels make rows recognisable; the queue works with ids alone if this fails.
 * The device list comes in pages (at most 1000 a request): follow X-Next-Cursor, bounded.
 */
let labelsPending = null;
const LABEL_PAGES = 50;
async function readLabels() {
  let cursor = null;
  for (let page = 0; page < LABEL_PAGES; page += 1) {
    const query = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    const res = await get(`/api/v1/devices?limit=1000${query}`);
    if (!res.ok) return;
    const list = Array.isArray(res.data) ? res.data : (res.data?.items ?? []);
    for (const d of list) state.labels.set(d.id, d.label || "");
    cursor = res.headers?.get("X-Next-Cursor");
    if (!cursor) return;
  }
}
function learnLabels() {
  labelsPending ??= readLabels().then(() => {
    labelsPending = null;
    for (const row of state.rows.values()) row.shows = null; // rebuilt with their labels
    render();
  });
  return labelsPending;
}

// --- attention: sound, title, screen reader ---------------------------------

// New P1 alarms within this of the last signal share it: a burst is one signal, not
// hundreds of tones scheduled on top of each other.
const ALERT_GAP_MS = 1500;
let lastAlertAt = -Infinity;

function alert() {
  const now = Date.now();
  if (now - lastAlertAt < ALERT_GAP_MS) return;
  lastAlertAt = now;
  playAlert();
}

function announce(alarm) {
  const region = document.getElementById(alarm.priority === 1 ? "announce-urgent" : "announce");
  region.textContent = t("announce.new", {
    prio: priorityText(alarm.priority), kind: kindText(alarm.kind),
    municipality: municipalityText(alarm.municipality), device: deviceText(alarm),
  });
}

function deviceText(alarm) {
  return state.labels.get(alarm.device_id) || alarm.device_id;
}

// --- rendering ---------------------------------------------------------------

function sorted() {
  return [...state.alarms.values()].sort(compareAlarms);
}

// Live changes within this are drawn together. A storm is drawn a few times a second,
// not once per alarm: rebuilding the queue for each change cost n²/2 row builds, and
// at 2,000 alarms the page was busy for minutes while a P1 waited behind them.
const RENDER_BATCH_MS = 50;
let renderTimer = null;

function scheduleRender() {
  renderTimer ??= setTimeout(render, RENDER_BATCH_MS);
}

function render() {
  clearTimeout(renderTimer);
  renderTimer = null;
  const list = sorted();
  const focusWasInTable = tbody.contains(document.activeElement);
  ensureSelection(list);
  for (const [id, row] of state.rows) {
    if (!state.alarms.has(id)) { row.remove(); state.rows.delete(id); }
  }
  placeRows(list);
  // Never "no alarms" before a read succeeded, nor while some wait out of view.
  emptyRow.hidden = list.length > 0 || !state.loaded || windows.partial();
  tick();
  if (focusWasInTable) focusSelected();
  showCounts();
}

/** "N open, M acknowledged", all of them; and, while some are out of view, plainly so. */
function showCounts() {
  const number = new Intl.NumberFormat(lang() === "nb" ? "nb-NO" : "en-GB");
  const totals = {};
  const lines = [];
  for (const s of STATES) {
    const shown = state.shown[s] ?? 0;
    totals[s] = windows.total(s, shown);
    if (totals[s] <= shown) continue;
    lines.push(t(`queue.partial.${s}`, {
      shown: number.format(shown), total: number.format(totals[s]), hidden: number.format(totals[s] - shown),
    }));
  }
  document.getElementById("counts").textContent = t("queue.counts", {
    open: number.format(totals.open), ack: number.format(totals.acknowledged),
  });
  const partial = document.getElementById("queue-partial");
  partial.hidden = lines.length === 0;
  if (lines.length) partial.replaceChildren(...lines.map((line) => el("strong", line)), el("span", t("queue.partialRest")));
}

/** One DOM node per alarm, kept by id, in `list`'s order; only rows out of place move. */
function placeRows(list) {
  let next = tbody.firstElementChild;
  for (const alarm of list) {
    const row = renderRow(alarm);
    if (row === next) next = next.nextElementSibling;
    else tbody.insertBefore(row, next);
  }
}

function renderRow(alarm) {
  let row = state.rows.get(alarm.id);
  if (!row) {
    row = el("tr");
    row.dataset.id = alarm.id;
    row.tabIndex = -1;
    row.addEventListener("click", () => select(alarm.id, true));
    row.addEventListener("dblclick", () => openDetail(alarm.id));
    state.rows.set(alarm.id, row);
  }
  if (state.fresh.delete(alarm.id)) row.classList.add("fresh");
  // Every change brings a new alarm object: a row still showing this one is up to date.
  if (row.shows !== alarm) {
    row.replaceChildren(...cells(alarm));
    row.shows = alarm;
    row.ageText = row.querySelector(".age");
    row.ageCell = row.querySelector(".age-cell");
    row.classList.toggle("state-acknowledged", alarm.state === "acknowledged");
  }
  const current = alarm.id === state.selectedId;
  if (row.current !== current) {
    row.current = current;
    row.setAttribute("aria-current", String(current));
    row.tabIndex = current ? 0 : -1;
  }
  return row;
}

function cells(alarm) {
  const prio = el("td");
  prio.append(priorityBadge(alarm.priority));
  const kind = el("td");
  const link = el("a", kindText(alarm.kind));
  link.href = `/alarms/${encodeURIComponent(alarm.id)}`;
  link.tabIndex = -1; // rows are reached with j/k and opened with Enter; one tab stop for the table
  kind.append(link);
  if (alarm.suppressed_by) kind.append(el("div", `${t("detail.suppressedBy")}: ${alarm.suppressed_by}`, "hint"));
  // Issue 12 items 3 and 5: what the sensor said (the alarm is still the operator's),
  // and a policy that has run out.
  if (alarm.clearing_event) kind.append(el("div", clearingText(alarm), "hint clearing"));
  if (alarm.escalation_exhausted_at) kind.append(el("div", exhaustedText(alarm), "hint exhausted"));
  const age = el("td", "", "age-cell");
  age.append(el("span", "", "age"), el("div", dateTime(alarm.raised_at), "hint"));
  const stateCell = el("td", t(`state.${alarm.state}`), "state");
  if (alarm.acknowledged_by) stateCell.append(el("div", alarm.acknowledged_by, "hint"));
  return [
    prio, kind, el("td", municipalityText(alarm.municipality)), el("td", deviceText(alarm)),
    age, el("td", String(alarm.escalation_level ?? 0), "num"), el("td", String(alarm.repeat_count ?? 0), "num"),
    stateCell,
  ];
}

/** Once a second: ages, past-target marks and the tab title. Cheap: no rows are rebuilt. */
function tick() {
  const now = serverNow();
  for (const [id, row] of state.rows) {
    const alarm = state.alarms.get(id);
    if (!alarm) continue;
    row.ageText.textContent = duration(ageSeconds(alarm, now));
    markOverdue(row, isOverdue(alarm, now, state.sla), state.sla[alarm.priority]);
  }
  const title = tabTitle([...state.alarms.values()], windows.total("open", state.shown.open));
  // Seen from another tab too: a page that is not live says so in its title.
  document.title = connection && !connection.live ? `${t("conn.title")} – ${title}` : title;
}

function markOverdue(row, overdue, target) {
  row.classList.toggle("overdue", overdue);
  const cell = row.ageCell;
  let mark = cell.querySelector(".overdue-mark");
  if (overdue && !mark) {
    // Text and a symbol as well as the colour: the mark must survive colour blindness.
    mark = el("div", `⚠ ${t("overdue")}`, "overdue-mark");
    mark.title = t("overdueLong", { target: shortDuration(target) });
    cell.append(mark);
  } else if (!overdue && mark) {
    mark.remove();
  }
}

// --- selection and keys --------------------------------------------------------

function ensureSelection(list) {
  if (list.some((a) => a.id === state.selectedId)) return;
  // The selected alarm left the queue: select the one that took its place.
  const oldIndex = [...tbody.children].findIndex((r) => r.dataset?.id === state.selectedId);
  const index = Math.min(Math.max(oldIndex, 0), list.length - 1);
  state.selectedId = list[index]?.id ?? null;
}

/** Select `id`: only the rows losing and gaining the selection change (a long queue). */
function select(id, focus) {
  const before = state.rows.get(state.selectedId);
  state.selectedId = id;
  for (const row of [before, state.rows.get(id)]) {
    if (!row) continue;
    row.current = row.dataset.id === id;
    row.setAttribute("aria-current", String(row.current));
    row.tabIndex = row.current ? 0 : -1;
  }
  if (focus) focusSelected();
}

function focusSelected() {
  const row = state.rows.get(state.selectedId);
  if (row) { row.focus(); row.scrollIntoView({ block: "nearest" }); }
}

function move(step) {
  if (renderTimer !== null) render(); // a change waiting to be drawn first: keys move through what is shown
  const rows = [...tbody.children];
  if (!rows.length) return;
  const index = rows.findIndex((r) => r.dataset.id === state.selectedId);
  const next = Math.min(Math.max(index + step, 0), rows.length - 1);
  select(rows[next].dataset.id, true);
}

function openDetail(id) {
  location.assign(`/alarms/${encodeURIComponent(id)}`);
}

async function act(action) {
  const alarm = state.alarms.get(state.selectedId);
  if (!alarm) { toast(t("help.selectHint"), true); return; }
  if (!mayAct(me)) { toast(unavailableText(me), true); return; } // refused by the API anyway
  const res = await runAction(alarm, action);
  // Apply the answer at once; the live stream brings the same change a moment later.
  if (res?.ok && res.data?.id) onChange(res.data);
  // Refused (409: a colleague first) or failed (503, no answer): the page may be behind
  // what happened; read the queue again rather than keep showing what it had.
  else if (res && !res.ok && res.status !== 401) reload();
  focusSelected();
}

function onKey(event) {
  if (!soundReady()) unlockSound().then(showSoundState);
  if (isTyping(event)) return;
  const key = event.key;
  if (key === "j" || key === "ArrowDown") move(1);
  else if (key === "k" || key === "ArrowUp") move(-1);
  else if (key === "Home") move(-Infinity);
  else if (key === "End") move(Infinity);
  else if (key === "Enter" && state.selectedId) openDetail(state.selectedId);
  else if (key === "?") showHelp(me);
  else if (ACTION_KEYS[key]) act(ACTION_KEYS[key]);
  else return;
  event.preventDefault();
}

// --- sound state ---------------------------------------------------------------------

function showSoundState() {
  document.getElementById("sound").hidden = soundReady();
}

async function main() {
  me = await startPage();
  document.addEventListener("keydown", onKey);
  document.addEventListener("pointerdown", () => unlockSound().then(showSoundState), { once: false });
  document.getElementById("sound").addEventListener("click", () => unlockSound().then(showSoundState));
  showSoundState();
  connection = connectionView(tick);
  const seq = await reload();
  // Back after a break, the silences are read again as the queue is: either may have
  // changed meanwhile.
  const resync = () => { readSilences(); reload(); };
  openStream({ alarm: onChange, resync, status: connection.stream }, seq);
  setInterval(tick, 1000);
  setInterval(reload, RECONCILE_MS);
  readSilences();
}

main();
