// The live stream of alarm changes (server-sent events), kept alive by the page itself.
//
// The browser's EventSource reconnects by itself after a network error and resends
// Last-Event-ID, so the server replays what was missed (or sends `resync`). Two ways a
// stream dies it does not handle, and both left a page that looked alive:
//  - a connection whose peer vanished (a NAT entry or proxy that lost it, an instance's
//    machine gone) stays open for the browser while nothing arrives: the badge said
//    "Live" and new alarms came only with the once-a-minute reload. The server sends
//    `event: ping` with `every_s` at the start and after every `every_s` of quiet; a
//    stream not heard from for twice that plus 5 s is closed here and another opened.
//  - an answer other than 200 (a proxy's 502 while alarmhub restarts, 429, 401) makes
//    the browser give up for good. The page used to reload itself then, and a reload
//    answered 502 was a bare error page that never tried again. Now /api/v1/me is asked
//    (a 401 goes to the login page, api.js) and another stream opened, after 1 s, 2 s,
//    4 s … at most 30 s, with jitter, so pages do not come back all at once.
// Every connection after the first reloads the whole list (`resync`): whatever happened
// meanwhile, the queue is read again, not trusted to a replay.

import { get } from "./api.js";

const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 30_000;
const DEFAULT_PING_S = 15; // until the stream's first ping says otherwise

/**
 * This page's name for its stream (`stream_id`): a stream the page replaces, whose peer
 * vanished without a word, would hold its server slot until TCP gave up (minutes), and
 * five replacements met the per-user limit; the server ends the same page's earlier
 * stream instead. Random per page, from getRandomValues (randomUUID needs https).
 */
function newStreamId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Silence longer than this, with pings every `pingS`, is a dead stream. */
export function deadAfterMs(pingS) {
  return (2 * pingS + 5) * 1000;
}

/**
 * Open the stream. `handlers.alarm(alarm)` gets each change, `handlers.resync()` is called
 * when the list must be reloaded, `handlers.status(state)` gets "connecting" | "live" | "stale".
 * Starting from the sequence number a snapshot was read at (`fromSeq`) means no change
 * falls between the snapshot and the stream.
 */
export function openStream(handlers, fromSeq = null) {
  let source = null;
  let lastSeq = fromSeq;
  let everOpen = false;
  let heardAt = Date.now();
  let pingS = DEFAULT_PING_S;
  let backoffMs = RECONNECT_MIN_MS;
  let retryTimer = null;
  let waiting = false; // closed, another not yet opened: from replace() to connect()
  const streamId = newStreamId();

  function heard(event) {
    heardAt = Date.now();
    if (event?.lastEventId) lastSeq = event.lastEventId;
  }

  function connect() {
    const params = new URLSearchParams({ stream_id: streamId });
    if (lastSeq != null) params.set("last_event_id", String(lastSeq));
    const src = new EventSource(`/api/v1/alarms/stream?${params}`);
    source = src;
    heardAt = Date.now(); // a connection that never opens is dead after the same silence
    handlers.status("connecting");
    const mine = (fn) => (event) => { if (src === source) fn(event); };
    src.addEventListener("open", mine(() => {
      heard();
      backoffMs = RECONNECT_MIN_MS;
      handlers.status("live");
      if (everOpen) handlers.resync();
      everOpen = true;
    }));
    src.addEventListener("error", mine(() => {
      // CONNECTING: the browser is trying again by itself. CLOSED: it gave up for good.
      if (src.readyState === EventSource.CLOSED) replace();
      else handlers.status("connecting");
    }));
    src.addEventListener("ping", mine((event) => {
      heard(event);
      const every = Number(JSON.parse(event.data)?.every_s);
      if (every > 0) pingS = every;
    }));
    src.addEventListener("alarm", mine((event) => {
      heard(event);
      try {
        handlers.alarm(JSON.parse(event.data));
      } catch (err) {
        console.error("alarmhub: bad alarm event", err);
      }
    }));
    src.addEventListener("resync", mine((event) => {
      heard(event);
      handlers.resync();
    }));
  }

  /** Close the stream, say so, and open another after the back-off. */
  function replace() {
    source?.close();
    source = null;
    handlers.status("stale");
    if (waiting) return;
    waiting = true;
    const wait = backoffMs * (0.5 + Math.random() / 2);
    backoffMs = Math.min(backoffMs * 2, RECONNECT_MAX_MS);
    retryTimer = setTimeout(reopen, wait);
  }

  async function reopen() {
    retryTimer = null;
    // Refused for good may mean logged out (in another tab, or the session ended):
    // then /me is 401 and request() takes the browser to the login page.
    const me = await get("/api/v1/me");
    if (me.status === 401) return;
    waiting = false;
    connect();
  }

  // Checked by the wall clock, not by counting ticks: a background tab's timers may run
  // late (once a minute), and a late check still sees how long the stream was silent.
  setInterval(() => {
    if (!waiting && Date.now() - heardAt > deadAfterMs(pingS)) replace();
  }, 1000);
  // Back on the network (a laptop woken, a cable put back): try now, not after the back-off.
  window.addEventListener("online", () => {
    if (retryTimer === null) return;
    clearTimeout(retryTimer);
    backoffMs = RECONNECT_MIN_MS;
    reopen();
  });

  connect();
}
