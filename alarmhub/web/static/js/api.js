// Talking to alarmhub's API: JSON in and out, the CSRF header on every state change,
// and errors returned as values (the pages show them; nothing is thrown at the operator).

let serverOffsetMs = 0;

/** Milliseconds to add to the local clock to get the server's: ages must not depend on a wrong PC clock. */
export function serverNow() {
  return Date.now() + serverOffsetMs;
}

function learnServerTime(response) {
  const date = Date.parse(response.headers.get("date") ?? "");
  if (Number.isNaN(date)) return;
  const offset = date - Date.now();
  // The Date header has one-second resolution: only correct offsets larger than that.
  serverOffsetMs = Math.abs(offset) > 1500 ? offset : 0;
}

function csrfToken() {
  // Over https the cookie is __Host-alarmhub_csrf (alarmhub/web/transport.py).
  const match = document.cookie.match(/(?:^|;\s*)(?:__Host-)?alarmhub_csrf=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/** A 401 means the session expired (or the server restarted): go to the login page. */
function toLogin() {
  const next = encodeURIComponent(location.pathname + location.search);
  location.assign(`/login?next=${next}`);
}

/**
 * fetch() wrapper. Resolves to {ok, status, data, error}; `error` is the API's
 * {code, message, holder?} object or a synthesised one for network faults.
 */
export async function request(method, url, body = undefined, contentType = "application/json") {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType;
    payload = contentType === "application/json" ? JSON.stringify(body) : body;
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
  } catch (err) {
    return { ok: false, status: 0, data: null, error: { code: "network", message: String(err) } };
  }
  learnServerTime(response);
  if (response.status === 401) {
    toLogin();
    return { ok: false, status: 401, data: null, error: { code: "unauthenticated", message: "" } };
  }
  let data;
  try {
    data = await readBody(response);
  } catch (err) {
    // The connection broke after the head, in the body: as much a network fault as no
    // answer at all, and returned as one. Thrown, it ended the caller mid-way (the
    // queue's reload, leaving the page frozen while it still said "Live").
    return { ok: false, status: 0, data: null, error: { code: "network", message: String(err) } };
  }
  const headers_ = response.headers; // e.g. a list's next page: X-Next-Cursor
  if (response.ok) return { ok: true, status: response.status, data, error: null, headers: headers_ };
  return { ok: false, status: response.status, data, error: errorOf(data, response), headers: headers_ };
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Accept both {"error": {...}} and FastAPI's {"detail": ...} shapes. */
function errorOf(data, response) {
  if (data && typeof data === "object") {
    if (data.error && typeof data.error === "object") return data.error;
    if (typeof data.detail === "string") return { code: String(response.status), message: data.detail };
    if (data.detail && typeof data.detail === "object" && !Array.isArray(data.detail)) return data.detail;
    if (Array.isArray(data.detail)) {
      return { code: "invalid", message: data.detail.map((d) => d.msg ?? String(d)).join("; ") };
    }
  }
  return { code: String(response.status), message: response.statusText || String(response.status) };
}

export const get = (url) => request("GET", url);
export const post = (url, body = {}) => request("POST", url, body);

/** The list in a list response: a bare array, or {items: [...]}. */
export function itemsOf(data) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data.items)) return data.items;
  return [];
}

/**
 * Follow `next_cursor` until the list is complete or `maxItems` are read (bounded, so a
 * bug cannot loop forever), asking for at most `pageSize` (the API's most: 500) a page.
 *
 * Stopping at `maxItems` is not the end of the list, and the answer says so: `cursor` is
 * where the rest begins (null when all was read) and `total` how many the list holds in
 * all (the API's count at the last page read). It once returned what it had read as if
 * it were everything, and the queue showed 25,000 of 40,000 open alarms as the queue.
 */
export async function getAll(url, maxItems = 25_000, pageSize = 500) {
  const all = [];
  let cursor = null;
  let seq = null; // the live stream's position at the first page: resume the stream from it
  let total = null;
  do {
    const sep = url.includes("?") ? "&" : "?";
    const limit = Math.min(pageSize, maxItems - all.length);
    const after = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    const res = await get(`${url}${sep}limit=${limit}${after}`);
    if (!res.ok) return { ...res, data: all };
    all.push(...itemsOf(res.data));
    const envelope = res.data && !Array.isArray(res.data) ? res.data : {};
    seq ??= envelope.seq ?? null;
    total = envelope.total ?? total;
    cursor = envelope.next_cursor ?? null;
  } while (cursor && all.length < maxItems);
  return { ok: true, status: 200, data: all, error: null, seq, cursor, total: total ?? all.length };
}
