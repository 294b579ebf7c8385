// What the operator is told about the page's link to alarmhub: a badge in the status bar,
// and, whenever the page cannot vouch for what it shows, a red banner across the top
// that cannot be missed (docs/operator-guide.md, "When the queue is not live").
//
// Two things make a page up to date: its live stream (live.js) is connected and heard
// from, and its last read of the data succeeded. Either failing is "not live": a page
// that failed to read the queue but whose stream works would otherwise say "Live" over
// a list that may be missing alarms.
import { timeOnly } from "./format.js";
import { t } from "./i18n.js";

// A page just opened takes a moment to connect: the banner waits this long before its
// first connection, never after it was once live.
const FIRST_CONNECT_GRACE_MS = 3000;

/**
 * The badge (`#conn`, if the page has one) and the banner (`#offline`). `onChange(value)`
 * is told each change of the shown value: "live" | "connecting" | "stale".
 */
export function connectionView(onChange = () => {}) {
  const badge = document.getElementById("conn");
  const banner = document.getElementById("offline");
  const started = Date.now();
  let stream = "connecting";
  let readOk = true;
  let everLive = false;
  let since = null; // when the page stopped being live
  let shown = null;

  function value() {
    if (stream !== "live") return stream;
    return readOk ? "live" : "stale";
  }

  function show() {
    const v = value();
    if (v === "live") {
      everLive = true;
      since = null;
    } else {
      since ??= new Date().toISOString();
    }
    if (badge) {
      badge.dataset.state = v;
      badge.textContent = t(`conn.${v}`);
    }
    document.body.dataset.conn = v;
    if (banner) {
      const early = !everLive && Date.now() - started < FIRST_CONNECT_GRACE_MS;
      banner.hidden = v === "live" || early;
      banner.dataset.state = v;
      banner.querySelector(".offline-since").textContent = since ? t("offline.since", { time: timeOnly(since) }) : "";
    }
    if (v !== shown) {
      shown = v;
      onChange(v);
    }
  }

  setTimeout(show, FIRST_CONNECT_GRACE_MS + 50);
  show();
  return {
    /** The stream's state: "live" | "connecting" | "stale". */
    stream(state) {
      stream = state;
      show();
    },
    /** Whether the page's last read of its data succeeded. */
    read(ok) {
      readOk = ok;
      show();
    },
    get live() {
      return value() === "live";
    },
  };
}
