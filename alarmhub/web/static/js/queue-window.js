// The part of a long queue the page holds: at most `maxRows` alarms of each state (open,
// acknowledged), the most urgent ones, and the count of the rest.
//
// A power cut or a network's recovery raises 20,000-40,000 alarms at once. The page reads
// at most 25,000 of each state (a page that held them all would be too slow to use) and
// used to show them as if they were the whole queue: "25 000 åpne" of 40,000, under a
// badge saying "Live"; alarms that came on the stream were shown, then taken away again
// unsaid by the next full read; and when the queue shrank it said "Ingen åpne alarmer"
// while thousands waited, until that read, up to a minute later. Now, per state:
//  - The window is what the server's order puts first (priority 1 first, then oldest),
//    read up to `maxRows`. `last` is the last alarm read, `cursor` where the rest begins.
//  - An alarm the page does not show yet comes into view when it sorts at or before
//    `last` (a P1 during a storm of P4s); one that sorts after it stays out of view and
//    is counted: `total`, the server's count, is read again after such changes, at most
//    every COUNT_GAP_MS while nothing leaves the window.
//  - When fewer than `maxRows` are shown (colleagues resolved some), the next ones are
//    read at once, after `cursor`: the rest come into view as the queue shrinks.
//  - An alarm once shown stays shown until it leaves the queue or a full read replaces
//    the list, even if its new state's window would not take it (no row vanishes on an
//    acknowledgement).
// The page says "Viser N av M" while any alarm is out of view (queue.js, render).
import { get, getAll, itemsOf } from "./api.js";

export const STATES = ["open", "acknowledged"];
const DEFAULT_MAX_ROWS = 25_000; // 50 pages of 500, as read before there was a window
const PAGE = 500; // the API's most per request
const COUNT_GAP_MS = 2000;

/**
 * The most alarms of each state the page reads: `?max_rows=N` on the page's address (a
 * positive whole number), else 25,000. Tests set it small rather than store 25,000
 * alarms; a centre whose PCs can take more may set it larger (docs/operator-guide.md).
 */
export function maxRowsOf(text) {
  const n = Number(text);
  return text && Number.isSafeInteger(n) && n > 0 ? n : DEFAULT_MAX_ROWS;
}

function emptyWindow() {
  return { more: false, cursor: null, last: null, total: 0, busy: false, again: false, timer: null, countAfter: 0, retryAfter: 0 };
}

/**
 * Does `alarm` sort after `last` in the server's order (priority, then raised_at)? The
 * API's times are to the millisecond and the server's to the microsecond: an alarm of
 * the same millisecond counts as before, so it is shown rather than skipped by both the
 * window and the next read after the cursor (at worst it is read once more).
 */
function sortsAfter(alarm, last) {
  return alarm.priority > last.priority
    || (alarm.priority === last.priority && Date.parse(alarm.raised_at) > Date.parse(last.raised_at));
}

export class QueueWindows {
  /**
   * `hooks`: shown(state) -> how many of that state the page shows; blocked() -> a full
   * read runs (or none succeeded yet); take(alarms) -> put read alarms in the queue and
   * draw; counted() -> draw the counts.
   */
  constructor(maxRows, hooks) {
    this.maxRows = maxRows;
    this.hooks = hooks;
    this.generation = 0; // a full read's answer makes older reads' answers void
    this.taking = false; // alarms read after the window are being put in the queue
    this.windows = Object.fromEntries(STATES.map((s) => [s, emptyWindow()]));
  }

  /** Read the most urgent `maxRows` of each state afresh: {ok, alarms, seq, windows} or {ok: false, message}. */
  async read() {
    this.invalidate();
    const reads = await Promise.all(STATES.map((s) => getAll(`/api/v1/alarms?state=${s}`, this.maxRows)));
    const failed = reads.find((r) => !r.ok);
    if (failed) return { ok: false, message: failed.error.message };
    const seqs = reads.map((r) => r.seq).filter((n) => n != null);
    const windows = Object.fromEntries(STATES.map((s, i) => [s, {
      ...emptyWindow(),
      more: reads[i].cursor != null,
      cursor: reads[i].cursor,
      last: reads[i].data.at(-1) ?? null,
      total: Math.max(reads[i].total, reads[i].data.length),
    }]));
    return { ok: true, alarms: reads.flatMap((r) => r.data), seq: seqs.length ? Math.min(...seqs) : null, windows };
  }

  /** Void every read under way: a full read replaces what they would bring. */
  invalidate() {
    this.generation += 1;
    for (const w of Object.values(this.windows)) clearTimeout(w.timer);
  }

  /** A full read's windows, taken before the changes buffered during it are applied. */
  replace(windows) {
    this.invalidate();
    this.windows = windows;
  }

  /** Should an alarm the page does not show yet be shown? */
  admits(alarm) {
    const w = this.windows[alarm.state];
    return !w || !w.more || !w.last || !sortsAfter(alarm, w.last);
  }

  /** Is any alarm left out of view? */
  partial() {
    return STATES.some((s) => this.windows[s].more);
  }

  /** How many alarms of `state` there are: those shown, or the server's count while some are not. */
  total(state, shown) {
    const w = this.windows[state];
    return w.more ? Math.max(w.total, shown) : shown;
  }

  /** An alarm changed (`before`: the copy shown, if any): read again what it may have changed. */
  changed(before, after, inQueue) {
    if (this.taking || (before && before.state === after.state)) return; // no count moved
    const states = new Set();
    if (before) states.add(before.state);
    if (inQueue) states.add(after.state);
    else if (!before) for (const s of STATES) states.add(s); // it may have been counted out of view
    for (const s of states) if (this.windows[s]?.more) this.refresh(s);
  }

  /**
   * Read `state`'s window again after the last alarm read: the next ones into the room
   * below `maxRows`, and the count. One read at a time; a change meanwhile reads again
   * after it. With no room, only the count is asked, at most every COUNT_GAP_MS: in a
   * storm every new alarm beyond the window asks, and each page would ask hundreds of
   * times a second. A read that failed waits as long (the full read, once a minute and
   * on reconnect, is the one that says so).
   */
  async refresh(state) {
    const w = this.windows[state];
    if (!w.more || this.hooks.blocked()) return;
    if (w.busy) { w.again = true; return; }
    const room = this.maxRows - this.hooks.shown(state);
    const wait = Math.max(w.retryAfter, room > 0 ? 0 : w.countAfter) - Date.now();
    clearTimeout(w.timer);
    w.timer = null;
    if (wait > 0) { w.timer = setTimeout(() => this.refresh(state), wait); return; }
    const generation = this.generation;
    w.busy = true;
    w.again = false;
    if (room <= 0) w.countAfter = Date.now() + COUNT_GAP_MS;
    const limit = Math.min(Math.max(room, 1), PAGE);
    let res;
    try {
      res = await get(`/api/v1/alarms?state=${state}&limit=${limit}&cursor=${encodeURIComponent(w.cursor)}`);
    } finally {
      w.busy = false;
    }
    if (generation !== this.generation) return; // a full read replaced this window meanwhile
    w.retryAfter = res.ok ? 0 : Date.now() + COUNT_GAP_MS;
    if (res.ok) this.#took(w, res.data, room);
    // Room left (some read were shown already, or resolved meanwhile): read on after them.
    const roomLeft = w.more && room > 0 && this.hooks.shown(state) < this.maxRows;
    if (!res.ok || w.again || roomLeft) this.refresh(state);
  }

  #took(w, data, room) {
    const items = itemsOf(data);
    w.total = data?.total ?? w.total;
    if (!items.length) w.more = false; // nothing after the last read: all of it is in view
    if (!items.length || room <= 0) { this.hooks.counted(); return; }
    w.last = items.at(-1);
    w.cursor = data.next_cursor ?? null;
    w.more = w.cursor != null;
    // After the window moved: they sort within it now. Taking them in is no change
    // that asks for another read.
    this.taking = true;
    try {
      this.hooks.take(items);
    } finally {
      this.taking = false;
    }
  }
}
