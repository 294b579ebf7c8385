// Silences of a whole municipality in force, above the queue: alarms they hide are not
// in it, and the operator must know that (issue 12 item 8). Read access is the
// operator's own; another municipality's silences are never listed.
//
// A failed read used to be ignored: the last list stayed on screen as if current, or
// none at all if no read had succeeded, so an operator could take a municipality for
// silenced after its silence had ended, or miss one hiding its alarms, under a badge
// saying "Live". A failed read is said on the list now, with when it was last read, in
// the page's not-live style (red, a dashed frame), and tried again soon (2 s, 4 s, …
// 30 s) until one succeeds, which clears the mark.
import { get, serverNow } from "./api.js";
import { dateTime, el, municipalityText, timeOnly } from "./format.js";
import { t } from "./i18n.js";

const EVERY_MS = 30_000;
const RETRY_MIN_MS = 2000;

let timer = null;
let retryMs = RETRY_MIN_MS;
let lastReadAt = null; // when a read last succeeded (server time, ISO), null before one did
let reads = 0; // reads started: the answer to an older one is not shown over a newer one

/** Read the silences now, then every 30 s (sooner after a failed read). */
export async function readSilences() {
  clearTimeout(timer);
  reads += 1;
  const mine = reads;
  const res = await get("/api/v1/silences");
  if (mine !== reads) return; // a newer read runs: it shows its answer and sets the timer
  if (res.ok) {
    lastReadAt = new Date(serverNow()).toISOString();
    show(res.data ?? []);
    retryMs = RETRY_MIN_MS;
    timer = setTimeout(readSilences, EVERY_MS);
    return;
  }
  markStale();
  timer = setTimeout(readSilences, retryMs);
  retryMs = Math.min(retryMs * 2, EVERY_MS);
}

function show(silences) {
  const list = document.getElementById("silences");
  const now = serverNow();
  const wide = silences.filter(
    (s) => s.device_id === null && Date.parse(s.starts_at) <= now && now < Date.parse(s.ends_at),
  );
  list.replaceChildren(
    ...wide.map((s) => {
      const text = t("queue.silenced", {
        municipality: municipalityText(s.municipality), until: dateTime(s.ends_at), reason: s.reason,
      });
      const p1 = t(s.include_priority_1 ? "queue.silencedP1" : "queue.silencedNotP1");
      return el("li", `${text} ${p1}`, "silence");
    }),
  );
  list.hidden = wide.length === 0;
  list.dataset.state = "live";
  document.getElementById("silences-stale").hidden = true;
}

/** The list kept as it was last read, marked as such; none read yet is said too. */
function markStale() {
  const list = document.getElementById("silences");
  const note = document.getElementById("silences-stale");
  list.dataset.state = "stale";
  let key = "silences.neverRead";
  if (lastReadAt !== null) key = list.childElementCount ? "silences.stale" : "silences.staleNone";
  const text = t(key, { time: timeOnly(lastReadAt) });
  if (note.textContent !== text) note.textContent = text; // an alert: said once, not per retry
  note.hidden = false;
}
