// The resident register for municipality administrators: set a resident's national
// identity number, see the register masked, remove an entry. The number typed is sent
// once (PUT) and never shown again: the API answers with it masked. Keyboard-first:
// the form is first on the page, Enter saves, the list's buttons are in tab order.
import { get, request } from "./api.js";
import { startPage, toast } from "./common.js";
import { dateTime, el, municipalityText } from "./format.js";
import { t } from "./i18n.js";

const municipality = () => document.getElementById("r-municipality").value;

function removeButton(entry) {
  const b = el("button", t("residents.remove"), "danger");
  b.type = "button";
  b.setAttribute("aria-label", `${t("residents.remove")} ${entry.resident}`);
  b.addEventListener("click", () => remove(entry));
  return b;
}

function row(entry) {
  const tr = el("tr");
  tr.dataset.resident = entry.resident;
  const actions = el("td");
  actions.append(removeButton(entry));
  tr.append(
    el("td", entry.resident), el("td", entry.national_id),
    el("td", `${dateTime(entry.updated_at)} – ${entry.updated_by}`), actions,
  );
  return tr;
}

async function load() {
  const res = await get(`/api/v1/residents?municipality=${encodeURIComponent(municipality())}`);
  if (res.status === 403) { document.getElementById("residents-denied").hidden = false; return; }
  if (!res.ok) { toast(t("error.generic", { message: res.error.message }), true); return; }
  const rows = res.data.map(row);
  if (!rows.length) {
    const td = el("td", t("residents.empty"), "empty");
    td.colSpan = 4;
    const tr = el("tr");
    tr.append(td);
    rows.push(tr);
  }
  document.querySelector("#residents tbody").replaceChildren(...rows);
}

async function save(event) {
  event.preventDefault();
  const resident = document.getElementById("r-resident").value.trim();
  const nid = document.getElementById("r-nid");
  const box = document.getElementById("resident-error");
  const res = await request("PUT", `/api/v1/residents/${encodeURIComponent(resident)}`, {
    municipality: municipality(), national_id: nid.value.trim(),
  });
  nid.value = ""; // never left in the page, whatever the answer
  if (!res.ok) {
    box.textContent = res.error.message ?? res.error.code;
    box.hidden = false;
    nid.focus();
    return;
  }
  box.hidden = true;
  toast(t("residents.saved", { resident, masked: res.data.national_id }));
  document.getElementById("r-resident").value = "";
  document.getElementById("r-resident").focus();
  await load();
}

async function remove(entry) {
  if (!window.confirm(t("residents.confirmRemove", { resident: entry.resident }))) return;
  const url = `/api/v1/residents/${encodeURIComponent(entry.resident)}?municipality=${encodeURIComponent(entry.municipality)}`;
  const res = await request("DELETE", url);
  if (!res.ok) { toast(t("error.generic", { message: res.error.message }), true); return; }
  toast(t("residents.removed", { resident: entry.resident }));
  await load();
}

async function main() {
  const me = await startPage();
  const select = document.getElementById("r-municipality");
  const mine = me?.municipalities ?? [];
  for (const m of mine) {
    const option = el("option", municipalityText(m));
    option.value = m;
    select.append(option);
  }
  if (!mine.length) { // an admin sees every municipality: type the number
    const input = el("input");
    input.id = "r-municipality";
    input.required = true;
    input.pattern = "[0-9]{4}";
    input.value = "0301";
    input.addEventListener("change", load);
    select.replaceWith(input);
  } else {
    select.addEventListener("change", load);
  }
  document.getElementById("resident-form").addEventListener("submit", save);
  await load();
  document.getElementById("r-resident").focus();
}

main().catch((err) => toast(String(err), true));
