// Response-time report: the API's per-priority/kind table, and a daily chart of time to
// acknowledge (median and p90) against the target, from the same answer's `daily` series
// (time to the first acknowledgement, by the Oslo day the alarm was raised).
import { get } from "./api.js";
import { lineChart } from "./chart.js";
import { startPage } from "./common.js";
import { el, kindText, knownMunicipalities, municipalityText, osloDay, priorityBadge, priorityText, shortDuration } from "./format.js";
import { t } from "./i18n.js";
import { DEFAULT_SLA } from "./queue-model.js";

const DAYS_DEFAULT = 30;
const sla = (() => {
  try { return { ...DEFAULT_SLA, ...JSON.parse(document.querySelector('meta[name="alarmhub-sla"]').content) }; } catch { return DEFAULT_SLA; }
})();

function fillFilters(me) {
  const mun = document.getElementById("mun");
  const list = me?.all_municipalities || !me?.municipalities?.length ? knownMunicipalities(me?.municipalities ?? []) : me.municipalities;
  const any = el("option", t("all"));
  any.value = "";
  mun.replaceChildren(any, ...list.map((m) => { const o = el("option", municipalityText(m)); o.value = m; return o; }));
  document.getElementById("prio").replaceChildren(...[1, 2, 3, 4].map((p) => { const o = el("option", priorityText(p)); o.value = String(p); return o; }));
  const today = osloDay(new Date().toISOString());
  document.getElementById("to").value = today;
  document.getElementById("from").value = addDays(today, -(DAYS_DEFAULT - 1));
}

function addDays(day, n) {
  const d = new Date(`${day}T12:00:00Z`); // noon: a DST change cannot move it to another day
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

function query() {
  const params = new URLSearchParams();
  const mun = document.getElementById("mun").value;
  if (mun) params.set("municipality", mun);
  params.set("from", document.getElementById("from").value);
  params.set("to", document.getElementById("to").value);
  return params;
}

async function show(event) {
  event?.preventDefault();
  const params = query();
  const res = await get(`/api/v1/reports/response-times?${params}`);
  const box = document.getElementById("report-error");
  box.hidden = res.ok;
  if (!res.ok) { box.textContent = res.status === 403 ? t("error.forbidden") : t("error.generic", { message: res.error.message }); return; }
  renderTable(res.data.groups ?? []);
  lastDaily = { daily: res.data.daily ?? [], from: res.data.since, to: res.data.until };
  renderChart();
}

const secs = (v) => (v == null ? "–" : shortDuration(v));

function renderTable(groups) {
  const rows = groups.map((g) => {
    const tr = el("tr");
    const prio = el("td");
    prio.append(priorityBadge(g.priority));
    const a = g.acknowledge ?? {};
    const compliance = g.sla_compliance == null ? "–" : `${(g.sla_compliance * 100).toFixed(1)} % (${g.sla_met}/${g.sla_decided})`;
    tr.append(prio, el("td", kindText(g.kind)), el("td", String(g.alarms ?? a.count ?? 0), "num"),
      el("td", secs(a.median_s), "num"), el("td", secs(a.p90_s), "num"), el("td", secs(a.p99_s), "num"),
      el("td", secs(g.sla_target_s), "num"), el("td", compliance, "num"));
    return tr;
  });
  if (!rows.length) {
    const td = el("td", t("reports.noData"), "empty");
    td.colSpan = 8;
    const tr = el("tr");
    tr.append(td);
    rows.push(tr);
  }
  document.querySelector("#report tbody").replaceChildren(...rows);
}

// --- the daily series -------------------------------------------------------------

let lastDaily = { daily: [], from: null, to: null };

/** Every day in range gets a point: the server's figures where it has some, else a gap. */
export function dailySeries(daily, prio, from, to) {
  const byDay = new Map(daily.filter((d) => d.priority === prio).map((d) => [d.day, d.acknowledge]));
  const days = [];
  for (let day = from; day <= to; day = addDays(day, 1)) {
    const a = byDay.get(day);
    days.push({ day, median: a?.median_s ?? null, p90: a?.p90_s ?? null });
  }
  return days;
}

function renderChart() {
  const prio = Number(document.getElementById("prio").value);
  const days = dailySeries(lastDaily.daily, prio, lastDaily.from, lastDaily.to);
  const target = sla[prio] ?? null;
  const chart = lineChart(days, target, {
    title: `${t("reports.chart")} – ${priorityText(prio)}`,
    desc: t("reports.chartDesc", { prio: priorityText(prio), target: shortDuration(target) }),
    seconds: t("reports.seconds"),
  });
  document.getElementById("chart").replaceChildren(chart);
}

async function main() {
  const me = await startPage();
  fillFilters(me);
  document.getElementById("filters").addEventListener("submit", show);
  document.getElementById("prio").addEventListener("change", () => renderChart());
  await show();
}

main();
