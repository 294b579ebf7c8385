// The municipality's device registry: search and filter, register, edit, decommission,
// and CSV import with each bad row's error shown next to its row number.
// A municipality has thousands of devices: the server filters and sends one page at a
// time (GET /api/v1/devices with `limit` and `cursor`), and this page shows that page.
import { get, request } from "./api.js";
import { may, startPage, toast } from "./common.js";
import { el, knownMunicipalities, municipalityText, shortDuration } from "./format.js";
import { t } from "./i18n.js";

const KINDS = ["safety_alarm", "fall_sensor", "door_sensor", "gps_tracker", "medication_dispenser"];
const PAGE_SIZE = 100;
let devices = []; // the page shown
let me = null;
// The cursor each page was read with: cursors[0] is the first page (none), the last is
// the page shown. "Previous" pops one; "next" pushes the server's X-Next-Cursor.
let cursors = [null];
let nextCursor = null;
const seenMunicipalities = new Set();

// The server's `manage_devices` (core/tenancy.py); not known: not offered (the API decides).
const canManage = () => may(me, "manage_devices") === true;

function fillSelects() {
  const own = me?.municipalities ?? [];
  const municipalities = me?.all_municipalities || !own.length
    ? knownMunicipalities([...own, ...seenMunicipalities])
    : own;
  for (const select of document.querySelectorAll(".kind-select")) {
    options(select, KINDS.map((k) => [k, t(`kind.${k}`)]), select.dataset.any);
  }
  for (const select of document.querySelectorAll(".mun-select")) {
    options(select, municipalities.map((m) => [m, municipalityText(m)]), select.dataset.any);
  }
}

function options(select, pairs, withAny) {
  const nodes = pairs.map(([value, text]) => { const o = el("option", text); o.value = value; return o; });
  if (withAny) { const o = el("option", t("all")); o.value = ""; nodes.unshift(o); }
  select.replaceChildren(...nodes);
}

/** Rebuild the selects (the list of municipalities may grow) without losing the choices. */
function keepFilters(rebuild) {
  const ids = ["f-kind", "f-mun", "r-kind", "r-mun"];
  const saved = ids.map((id) => document.getElementById(id).value);
  rebuild();
  ids.forEach((id, i) => { if (saved[i]) document.getElementById(id).value = saved[i]; });
}

/** The filters as the API's query: the server filters, so they hold across pages. */
function query() {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const q = document.getElementById("q").value.trim();
  const kind = document.getElementById("f-kind").value;
  const mun = document.getElementById("f-mun").value;
  const active = document.getElementById("f-active").value;
  if (q) params.set("q", q);
  if (kind) params.set("kind", kind);
  if (mun) params.set("municipality", mun);
  if (active) params.set("active", String(active === "active"));
  else params.set("include_inactive", "true");
  const cursor = cursors[cursors.length - 1];
  if (cursor) params.set("cursor", cursor);
  return params;
}

/** Load the page the cursors point at (after a change, the same page again). */
async function load() {
  const res = await get(`/api/v1/devices?${query()}`);
  if (!res.ok) { toast(t("error.generic", { message: res.error.message }), true); return; }
  devices = Array.isArray(res.data) ? res.data : [];
  nextCursor = res.headers?.get("X-Next-Cursor") || null;
  for (const d of devices) seenMunicipalities.add(d.municipality);
  keepFilters(fillSelects);
  renderTable();
}

/** A changed filter starts again at the first page. */
let filterTimer = null;
function filterChanged() {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => { cursors = [null]; load(); }, 250);
}

function turnPage(forward) {
  if (forward && nextCursor) cursors.push(nextCursor);
  else if (!forward && cursors.length > 1) cursors.pop();
  else return;
  load();
}

function renderTable() {
  const list = devices;
  const rows = list.map(deviceRow);
  if (!rows.length) {
    const td = el("td", t("devices.empty"), "empty");
    td.colSpan = 7;
    const tr = el("tr");
    tr.append(td);
    rows.push(tr);
  }
  document.querySelector("#devices tbody").replaceChildren(...rows);
  document.getElementById("count").textContent = t("devices.count", { shown: list.length, page: cursors.length });
  document.getElementById("prev-page").disabled = cursors.length <= 1;
  document.getElementById("next-page").disabled = !nextCursor;
}

function deviceRow(d) {
  const tr = el("tr");
  const actions = el("td");
  if (canManage() && d.active) {
    actions.append(button(t("devices.edit"), () => edit(d), `${t("devices.edit")} ${d.id}`));
    actions.append(" ", button(t("devices.decommission"), () => decommission(d), `${t("devices.decommission")} ${d.id}`, "danger"));
  }
  tr.append(
    el("td", d.id), el("td", d.label ?? ""), el("td", t(`kind.${d.kind}`)), el("td", municipalityText(d.municipality)),
    el("td", d.heartbeat_interval_s ? shortDuration(d.heartbeat_interval_s) : "–", "num"),
    el("td", t(d.active ? "devices.active" : "devices.inactive")), actions,
  );
  return tr;
}

function button(text, onClick, label, className = "") {
  const b = el("button", text, className);
  b.type = "button";
  b.setAttribute("aria-label", label); // "Edit pend-1", not five identical "Edit" buttons
  b.addEventListener("click", onClick);
  return b;
}

/** Form values as the API wants them: empty optional fields left out, numbers as numbers. */
function formBody(form) {
  const body = {};
  for (const [key, value] of new FormData(form)) {
    if (value === "") continue;
    body[key] = key === "heartbeat_interval_s" ? Number(value) : value;
  }
  return body;
}

async function register(event) {
  event.preventDefault();
  const form = event.target;
  const res = await request("POST", "/api/v1/devices", formBody(form));
  const box = document.getElementById("register-error");
  box.hidden = res.ok;
  if (!res.ok) { box.textContent = t("error.generic", { message: res.error.message }); return; }
  toast(t("devices.saved", { id: res.data?.id ?? "" }));
  form.reset();
  await load();
}

/** Edit label and heartbeat interval in a small dialog (id, kind and municipality stay). */
function edit(device) {
  const dialog = el("dialog");
  const form = el("form");
  form.method = "dialog";
  const title = el("h2", `${t("devices.edit")}: ${device.id}`);
  title.id = "edit-title";
  dialog.setAttribute("aria-labelledby", "edit-title");
  const label = field("e-label", t("field.label"), "text", device.label ?? "");
  const hb = field("e-hb", t("field.heartbeat"), "number", device.heartbeat_interval_s ?? "");
  hb.input.min = "10";
  const s = device.settings ?? {};
  const night = s.windows?.night ?? ["", ""];
  const resident = field("e-res", t("field.resident"), "text", device.resident ?? "");
  const nightFrom = field("e-nf", t("field.nightFrom"), "time", night[0]);
  const nightTo = field("e-nt", t("field.nightTo"), "time", night[1]);
  const lat = field("e-lat", t("field.zoneLat"), "number", s.geofence?.lat ?? "");
  const lon = field("e-lon", t("field.zoneLon"), "number", s.geofence?.lon ?? "");
  const radius = field("e-rad", t("field.zoneRadius"), "number", s.geofence?.radius_m ?? "");
  for (const f of [lat, lon]) f.input.step = "any";
  const doses = field("e-dose", t("field.doseTimes"), "text", (s.dose_schedule?.times ?? []).join(", "));
  doses.input.placeholder = "08:00, 20:00";
  const error = el("p", "", "error-text");
  error.setAttribute("role", "alert");
  const menu = el("menu");
  const cancel = el("button", t("dialog.cancel"));
  cancel.type = "button";
  cancel.addEventListener("click", () => dialog.close());
  const save = el("button", t("dialog.save"), "primary");
  save.type = "submit";
  menu.append(cancel, save);
  form.append(title, label.wrap, hb.wrap, resident.wrap, nightFrom.wrap, nightTo.wrap,
    lat.wrap, lon.wrap, radius.wrap, doses.wrap, error, menu);
  dialog.append(form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { label: label.input.value || null };
    body.heartbeat_interval_s = hb.input.value === "" ? null : Number(hb.input.value);
    body.resident = resident.input.value.trim() || null;
    body.settings = settingsFrom(s, {
      nightFrom: nightFrom.input.value, nightTo: nightTo.input.value,
      lat: lat.input.value, lon: lon.input.value, radius: radius.input.value,
      doses: doses.input.value,
    });
    const res = await request("PATCH", `/api/v1/devices/${encodeURIComponent(device.id)}`, body);
    if (!res.ok) { error.textContent = t("error.generic", { message: res.error.message }); return; }
    dialog.close();
    toast(t("devices.saved", { id: device.id }));
    await load();
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

/**
 * The device's settings with the dialog's values applied. Keys the dialog does
 * not show (a polygon fence, the GPS accuracy limit) are kept as they are; an
 * emptied field removes its setting. The server validates everything again.
 */
function settingsFrom(existing, v) {
  const out = { ...existing };
  const windows = { ...(existing.windows ?? {}) };
  if (v.nightFrom && v.nightTo) windows.night = [v.nightFrom, v.nightTo];
  else delete windows.night;
  if (Object.keys(windows).length) out.windows = windows; else delete out.windows;
  if (v.lat !== "" && v.lon !== "" && v.radius !== "") {
    out.geofence = { lat: Number(v.lat), lon: Number(v.lon), radius_m: Number(v.radius) };
  } else {
    delete out.geofence;
  }
  const times = v.doses.split(",").map((x) => x.trim()).filter(Boolean);
  if (times.length) out.dose_schedule = { ...(existing.dose_schedule ?? {}), times };
  else delete out.dose_schedule;
  return out;
}

function field(id, text, type, value) {
  const wrap = el("div", "", "field");
  const label = el("label", text);
  label.htmlFor = id;
  const input = el("input");
  input.id = id;
  input.type = type;
  input.value = String(value);
  wrap.append(label, input);
  return { wrap, input };
}

async function decommission(device) {
  // A native confirm is keyboard- and screen-reader-friendly and cannot be mis-styled.
  if (!window.confirm(t("devices.confirmDecommission", { id: device.id }))) return;
  const res = await request("DELETE", `/api/v1/devices/${encodeURIComponent(device.id)}`);
  if (!res.ok) { toast(t("error.generic", { message: res.error.message }), true); return; }
  toast(t("devices.saved", { id: device.id }));
  await load();
}

async function importCsv(event) {
  event.preventDefault();
  const file = document.getElementById("i-file").files[0];
  const text = file ? await file.text() : document.getElementById("i-text").value;
  if (!text.trim()) return;
  const res = await request("POST", "/api/v1/devices/import", text, "text/csv");
  showImportResult(res);
  if (res.ok) await load();
}

/**
 * The API rejects a bad file as a whole (422, `error.rows`: one text per bad row, e.g.
 * "row 3: kind: ..."). Each becomes {row, message} so the table lines up by row number.
 */
function rowErrors(res) {
  const data = res.data ?? {};
  const list = data.error?.rows ?? data.error?.errors ?? data.errors ?? [];
  if (!Array.isArray(list)) return [];
  return list.map((item) => {
    if (typeof item !== "string") return { row: item.row ?? item.line ?? "", message: item.message ?? JSON.stringify(item) };
    const match = item.match(/^(?:row|line|rad)\s+(\d+)\s*:\s*(.*)$/i);
    return match ? { row: match[1], message: match[2] } : { row: "", message: item };
  });
}

function showImportResult(res) {
  const box = document.getElementById("import-result");
  const errors = rowErrors(res);
  const nodes = [];
  if (res.ok) nodes.push(el("p", t("devices.importOk", { count: res.data?.imported ?? 0 })));
  else nodes.push(el("p", t("error.generic", { message: res.error.message }), "error-text"));
  if (errors.length) {
    const table = el("table");
    table.append(el("caption", t("devices.importErrors")));
    const head = el("tr");
    head.append(el("th", t("devices.row")), el("th", t("devices.error")));
    table.append(head);
    for (const e of errors) {
      const tr = el("tr");
      tr.append(el("td", String(e.row || "–"), "num"), el("td", e.message));
      table.append(tr);
    }
    nodes.push(table);
  }
  box.replaceChildren(...nodes);
}

async function main() {
  me = await startPage();
  for (const section of document.querySelectorAll(".manage")) section.hidden = !canManage();
  for (const id of ["q", "f-kind", "f-mun", "f-active"]) document.getElementById(id).addEventListener("input", filterChanged);
  document.getElementById("prev-page").addEventListener("click", () => turnPage(false));
  document.getElementById("next-page").addEventListener("click", () => turnPage(true));
  document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
  document.getElementById("register").addEventListener("submit", register);
  document.getElementById("import").addEventListener("submit", importCsv);
  await load();
}

main();
