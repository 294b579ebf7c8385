// A small line chart drawn as inline SVG: daily median and p90 against the target.
// Built with DOM calls (no innerHTML) so the page keeps its strict CSP.

const NS = "http://www.w3.org/2000/svg";
const W = 800;
const H = 320;
const PAD = { left: 60, right: 20, top: 20, bottom: 50 };

function svg(tag, attrs = {}, text = "") {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text) node.textContent = text;
  return node;
}

/** Round the axis top up to a readable number, and always above the target line. */
function axisMax(values, target) {
  const top = Math.max(target ?? 0, ...values) * 1.1 || 60;
  // Each divides by four into whole seconds: the four grid lines get exact labels.
  const steps = [8, 20, 40, 60, 120, 240, 600, 1200, 1800, 3600, 7200];
  return steps.find((s) => s >= top) ?? Math.ceil(top / 3600) * 3600;
}

/**
 * days: [{day: "2026-11-25", median, p90}] (seconds, null when no alarms that day);
 * target: seconds or null; labels: {title, desc, median, p90, sla, seconds}.
 */
export function lineChart(days, target, labels) {
  const values = days.flatMap((d) => [d.median, d.p90]).filter((v) => v != null);
  const max = axisMax(values, target);
  const x = (i) => PAD.left + (days.length <= 1 ? 0 : (i * (W - PAD.left - PAD.right)) / (days.length - 1));
  const y = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title chart-desc" });
  root.append(svg("title", { id: "chart-title" }, labels.title), svg("desc", { id: "chart-desc" }, labels.desc));
  root.append(...yAxis(max, y, labels.seconds), ...xAxis(days, x));
  if (target != null) {
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(target), y2: y(target),
      stroke: "#b3261e", "stroke-width": 2, "stroke-dasharray": "2 4" }));
  }
  root.append(series(days, "median", x, y, { stroke: "#0b57d0" }));
  root.append(series(days, "p90", x, y, { stroke: "#9a4d00", "stroke-dasharray": "8 4" }));
  return root;
}

function yAxis(max, y, unit) {
  const nodes = [];
  for (let i = 0; i <= 4; i += 1) {
    const v = (max / 4) * i;
    nodes.push(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), stroke: "#c9ced6" }));
    nodes.push(svg("text", { x: PAD.left - 8, y: y(v) + 4, "text-anchor": "end", "font-size": 12, fill: "#1b1f24" }, String(Math.round(v))));
  }
  nodes.push(svg("text", { x: 14, y: PAD.top + 110, "font-size": 12, fill: "#1b1f24", transform: `rotate(-90 14 ${PAD.top + 110})` }, unit));
  return nodes;
}

function xAxis(days, x) {
  // At most ~10 date labels, so they never overlap.
  const every = Math.max(1, Math.ceil(days.length / 10));
  return days.flatMap((d, i) => (i % every ? [] : [
    svg("text", { x: x(i), y: H - PAD.bottom + 18, "text-anchor": "middle", "font-size": 12, fill: "#1b1f24" }, d.day.slice(5)),
  ]));
}

/** A line through the days that have a value, with a dot on each (gaps stay gaps). */
function series(days, key, x, y, style) {
  const group = svg("g", { fill: "none", "stroke-width": 2.5, ...style });
  let path = "";
  days.forEach((d, i) => {
    if (d[key] == null) { path += " "; return; }
    const cmd = path.endsWith(" ") || path === "" ? "M" : "L";
    path += `${cmd}${x(i).toFixed(1)},${y(d[key]).toFixed(1)}`;
    group.append(svg("circle", { cx: x(i), cy: y(d[key]), r: 3.5, fill: style.stroke }));
  });
  group.prepend(svg("path", { d: path.trim() || "M0,0" }));
  return group;
}
