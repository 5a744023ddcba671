// Statistics: counts by status and type over a chosen window, engine counters, and a
// hand-drawn SVG chart of tasks finished per hour over the last 24 hours.

import { api } from "../api.js";
import { live } from "../live.js";
import { badge, clear, empty, errorBox, fmtDuration, fmtNumber, h, loading, pageHeader, serialized } from "../ui.js";

const WINDOWS = { "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
const OUTCOMES = [["completed", "Completed"], ["failed", "Failed"], ["cancelled", "Cancelled"]];
const SVG = "http://www.w3.org/2000/svg";

export function render({ root, query, go }) {
  const windowKey = WINDOWS[query.window] ? query.window : "7d";
  const select = h("select#stats-window", { "aria-label": "Window", on: { change: (e) => go("/stats", { window: e.target.value }) } },
    Object.keys(WINDOWS).map((k) => h("option", { value: k, selected: k === windowKey }, `Last ${k}`)));
  const cards = h("div.cards", loading());
  const breakdown = h("div.grid-2");
  const chart = h("div.card", h("h2", "Finished per hour, last 24 hours"), loading());
  clear(root, pageHeader("Statistics", "Tasks finished in the chosen window (from its first hour) and pending or running now; engine counters of this node.", select), cards, chart, breakdown);

  const reload = serialized(async () => {
    const since = new Date(Date.now() - WINDOWS[windowKey] * 1000).toISOString();
    try {
      const [stats, through] = await Promise.all([
        api("GET", "/api/sync/tasks/statistics", { query: { since } }),
        api("GET", "/api/sync/tasks/throughput", { query: { hours: 24 } }),
      ]);
      drawCards(cards, stats);
      drawBreakdown(breakdown, stats.database);
      clear(chart, h("h2", "Finished per hour, last 24 hours"), throughputChart(through.buckets));
    } catch (error) {
      clear(cards, errorBox(error, "Could not load the statistics"));
    }
  });
  reload();
  const timer = setInterval(reload, 5000);
  live.setPoller(null);
  return () => clearInterval(timer);
}

function drawCards(box, stats) {
  const db = stats.database;
  const engine = stats.engine;
  const rate = db.success_rate === null ? "—" : `${(db.success_rate * 100).toFixed(1)}%`;
  clear(box,
    card("Tasks", fmtNumber(db.total), "finished in the window, pending and running"),
    card("Success rate", rate, "completed ÷ (completed + failed)"),
    card("Mean duration", fmtDuration(db.avg_duration_s), "of completed tasks"),
    card("Running", `${engine.running_tasks} / ${engine.max_concurrent}`, `on ${engine.node_id}`),
    card("Queued", fmtNumber(engine.queue_length), "pending, due or not"),
    card("Database", engine.database_ok ? "reachable" : "unavailable", `up ${fmtDuration(engine.uptime_s)}`));
}

function card(label, value, note) {
  return h("div.card.stat", h("span.stat-label", label), h("strong.stat-value", value), h("span.muted.small", note));
}

function drawBreakdown(box, db) {
  const max = Math.max(1, ...Object.values(db.by_status));
  const statusRows = Object.entries(db.by_status).map(([status, count]) =>
    h("div.hbar", { dataset: { status } },
      h("span.hbar-label", badge(status)),
      h("span.hbar-track", h(`span.hbar-fill.s-${status}`, { style: `width:${(100 * count) / max}%` })),
      h("span.hbar-count", fmtNumber(count))));
  const types = Object.entries(db.by_type).sort((a, b) => b[1] - a[1]);
  const typeMax = Math.max(1, ...types.map(([, n]) => n));
  const typeRows = types.map(([type, count]) =>
    h("div.hbar", h("span.hbar-label", h("code", type)),
      h("span.hbar-track", h("span.hbar-fill.s-type", { style: `width:${(100 * count) / typeMax}%` })),
      h("span.hbar-count", fmtNumber(count))));
  clear(box,
    h("div.card", h("h2", "By status"), statusRows),
    h("div.card", h("h2", "By type"), typeRows.length ? typeRows : empty("No tasks in this window")));
}

/** A stacked bar per hour (completed, failed, cancelled), with hour ticks and a legend. */
export function throughputChart(buckets) {
  const total = buckets.reduce((n, b) => n + b.completed + b.failed + b.cancelled, 0);
  const width = 1000;
  const height = 240;
  const pad = { left: 40, right: 10, top: 10, bottom: 28 };
  const max = Math.max(1, ...buckets.map((b) => b.completed + b.failed + b.cancelled));
  const step = niceStep(max);
  const top = Math.ceil(max / step) * step;
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const slot = plotW / buckets.length;
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": `Tasks finished per hour: ${total} in total` });
  for (let v = 0; v <= top; v += step) {
    const y = pad.top + plotH - (v / top) * plotH;
    svg.append(svgEl("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }));
    svg.append(svgEl("text", { x: pad.left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, String(v)));
  }
  buckets.forEach((b, i) => {
    const x = pad.left + i * slot + slot * 0.15;
    let y = pad.top + plotH;
    const group = svgEl("g", { class: "bar" });
    const when = new Date(b.hour);
    const label = `${when.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${String(when.getHours()).padStart(2, "0")}:00`;
    group.append(svgEl("title", {}, `${label}\ncompleted ${b.completed}, failed ${b.failed}, cancelled ${b.cancelled}`));
    for (const [key] of OUTCOMES) {
      const hgt = (b[key] / top) * plotH;
      if (hgt <= 0) continue;
      y -= hgt;
      group.append(svgEl("rect", { x, y, width: slot * 0.7, height: hgt, class: `seg ${key}` }));
    }
    group.append(svgEl("rect", { x: pad.left + i * slot, y: pad.top, width: slot, height: plotH, class: "hover" }));
    svg.append(group);
    if (i % 3 === 0) {
      svg.append(svgEl("text", { x: pad.left + i * slot + slot / 2, y: height - 8, class: "axis", "text-anchor": "middle" },
        `${String(when.getHours()).padStart(2, "0")}h`));
    }
  });
  const legend = h("div.legend", OUTCOMES.map(([key, name]) =>
    h("span", h(`i.swatch.${key}`), `${name} ${fmtNumber(buckets.reduce((n, b) => n + b[key], 0))}`)));
  return h("div.chart-box", total ? null : h("p.muted", "Nothing finished in the last 24 hours."), svg, legend);
}

function niceStep(max) {
  const raw = max / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (raw <= m * mag) return Math.max(1, m * mag);
  return Math.max(1, 10 * mag);
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
