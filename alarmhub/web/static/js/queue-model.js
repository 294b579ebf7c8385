// The queue's rules as pure functions over plain alarm objects: order, targets, counts.
// No DOM here, so the order the operators see is decided in one readable place.

/** Acknowledgement targets (seconds) per priority, used unless the server sends its own. */
export const DEFAULT_SLA = { 1: 60, 2: 300, 3: 900, 4: 3600 };

const STATE_ORDER = { open: 0, acknowledged: 1, resolved: 2 };

/**
 * Most urgent first, then oldest: priority 1 before 2; within a priority an alarm nobody
 * has taken yet before one a colleague acknowledged; then the longest waiting first.
 */
export function compareAlarms(a, b) {
  return (a.priority - b.priority)
    || ((STATE_ORDER[a.state] ?? 3) - (STATE_ORDER[b.state] ?? 3))
    || (Date.parse(a.raised_at) - Date.parse(b.raised_at))
    || String(a.id).localeCompare(String(b.id));
}

export function inQueue(alarm) {
  return alarm.state === "open" || alarm.state === "acknowledged";
}

export function ageSeconds(alarm, nowMs) {
  return (nowMs - Date.parse(alarm.raised_at)) / 1000;
}

/** Past target: still not acknowledged after the priority's target time. */
export function isOverdue(alarm, nowMs, sla) {
  const target = sla[alarm.priority];
  return alarm.state === "open" && target != null && ageSeconds(alarm, nowMs) > target;
}

/**
 * "(2) ⚠ alarmhub" while P1 alarms wait unacknowledged; "(5) alarmhub" for other open ones.
 * `openTotal`: all the open alarms, when the page shows only the most urgent of a long
 * queue (queue-window.js); else those in `alarms` are all of them.
 */
export function tabTitle(alarms, openTotal = null) {
  const open = alarms.filter((a) => a.state === "open");
  const critical = open.filter((a) => a.priority === 1).length;
  const waiting = Math.max(openTotal ?? 0, open.length);
  // Every open alarm shown is a P1 and more wait out of view: some of those may be too.
  const more = critical > 0 && critical === open.length && waiting > open.length ? "+" : "";
  if (critical > 0) return `(${critical}${more}) ⚠ alarmhub`;
  if (waiting > 0) return `(${waiting}) alarmhub`;
  return "alarmhub";
}

/** Does this change bring a P1 into the queue that was not waiting there before? */
export function isNewCritical(before, after) {
  return after.priority === 1 && after.state === "open" && (!before || before.state !== "open");
}
