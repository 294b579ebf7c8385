// The live stream of alarm changes (server-sent events).
// EventSource reconnects by itself and resends Last-Event-ID, so the server can replay
// what we missed; when it cannot, it sends `resync` and we reload the whole list.

/**
 * Open the stream. `handlers.alarm(alarm)` gets each change, `handlers.resync()` is called
 * when the list must be reloaded, `handlers.status(state)` gets "connecting" | "live" | "stale".
 */
export function openStream(handlers, fromSeq = null) {
  // Starting from the sequence number a snapshot was read at means no change falls
  // between the snapshot and the stream.
  const query = fromSeq == null ? "" : `?last_event_id=${encodeURIComponent(fromSeq)}`;
  const source = new EventSource(`/api/v1/alarms/stream${query}`);
  let wasLive = false;
  handlers.status("connecting");
  source.addEventListener("open", () => {
    handlers.status("live");
    // On reconnect the browser sends Last-Event-ID and the server replays what we missed,
    // but if alarmhub itself restarted its sequence numbers began again at zero and
    // nothing would be replayed: reload the list too, so the queue is right either way.
    if (wasLive) handlers.resync();
    wasLive = true;
  });
  source.addEventListener("error", () => {
    // CLOSED means the browser gave up (e.g. a 401 after a restart): reload to log in again.
    handlers.status(source.readyState === EventSource.CLOSED ? "stale" : "connecting");
    if (source.readyState === EventSource.CLOSED) setTimeout(() => location.reload(), 5000);
  });
  source.addEventListener("alarm", (event) => {
    try {
      handlers.alarm(JSON.parse(event.data));
    } catch (err) {
      console.error("alarmhub: bad alarm event", err);
    }
  });
  source.addEventListener("resync", () => handlers.resync());
  return source;
}
