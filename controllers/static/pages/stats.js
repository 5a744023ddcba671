// Statistics: counts by status and type over a chosen window, engine counters, and a
// hand-drawn SVG chart of tasks finished in that window: per hour up to 48 hours, per day
// beyond, in the time zone the dashboard shows (local or UTC).

import { api } from "../api.js";
import { live } from "../live.js";
import {
  badge, clear, empty, errorBox, fmtDuration, fmtNumber, h, loading, pageHeader, serialized,
  zoneLabel, zoned,
} from "../ui.js";

const WINDOWS = {
  "1h": ["Last hour", 3600],
  "24h": ["Last 24 hours", 86400],
  "48h": ["Last 48 hours", 2 * 86400],
  "7d": ["Last 7 days", 7 * 86400],
  "30d": ["Last 30 days", 30 * 86400],
};
const HOURLY_UP_TO_S = 2 * 86400;
const MAX_HOURS = 24 * 31; // what GET /api/sync/tasks/throughput serves at most
const OUTCOMES = [["completed", "Completed"], ["failed", "Failed"], ["cancelled", "Cancelled"]];
const SVG = "http://www.w3.org/2000/svg";

export function render({ root, query, go }) {
  const windowKey = WINDOWS[query.window] ? query.window : "7d";
  const [windowName, windowS] = WINDOWS[windowKey];
  const select = h("select#stats-window", { "aria-label": "Window", on: { change: (e) => go("/stats", { window: e.target.value }) } },
    Object.entries(WINDOWS).map(([k, [name]]) => h("option", { value: k, selected: k === windowKey }, name)));
  const cards = h("div.cards", loading());
  const breakdown = h("div.grid-2");
  const hourly = windowS <= HOURLY_UP_TO_S;
  const title = `Finished per ${hourly ? "hour" : "day"}, ${windowName.toLowerCase()} (${zoneLabel()})`;
  const chart = h("div.card#throughput", h("h2", title), loading());
  clear(root, pageHeader("Statistics", "Tasks finished in the chosen window (from its first hour) and pending or running now; engine counters of this node.", select), cards, chart, breakdown);

  const reload = serialized(async () => {
    const since = new Date(Date.now() - windowS * 1000).toISOString();
    const hours = Math.min(MAX_HOURS, Math.ceil(windowS / 3600) + 1);
    try {
      const [stats, through] = await Promise.all([
        api("GET", "/api/sync/tasks/statistics", { query: { since } }),
        api("GET", "/api/sync/tasks/throughput", { query: { hours } }),
      ]);
      drawCards(cards, stats);
      drawBreakdown(breakdown, stats.database);
      const buckets = hourly ? hourBuckets(through.buckets) : dayBuckets(through.buckets);
      clear(chart, h("h2", title), throughputChart(buckets, hourly ? "hour" : "day"));
    } catch (error) {
      clear(cards, errorBox(error, "Could not load the statistics"));
    }
  });
  reload();
  const timer = setInterval(reload, 5000);
  live.setPoller(null);
  return () => clearInterval(timer);
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function two(n) {
  return String(n).padStart(2, "0");
}

/** One bucket per hour, labelled in the shown zone. */
function hourBuckets(raw) {
  return raw.map((b) => {
    const p = zoned(new Date(b.hour));
    return { ...b, tick: `${two(p.hour)}h`, title: `${MONTHS[p.month - 1]} ${p.day} ${two(p.hour)}:00 ${zoneLabel(new Date(b.hour))}` };
  });
}

/** Hour buckets summed per calendar day of the shown zone (a zone whose offset is not whole
 * hours splits an hour's tasks by where the hour starts). */
function dayBuckets(raw) {
  const days = new Map();
  for (const b of raw) {
    const p = zoned(new Date(b.hour));
    const key = `${p.year}-${two(p.month)}-${two(p.day)}`;
    if (!days.has(key)) {
      days.set(key, { completed: 0, failed: 0, cancelled: 0, tick: `${MONTHS[p.month - 1]} ${p.day}`, title: `${key} (${zoneLabel(new Date(b.hour))})` });
    }
    const day = days.get(key);
    for (const [outcome] of OUTCOMES) day[outcome] += b[outcome] || 0;
  }
  return [...days.values()];
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

/** A stacked bar per bucket (completed, failed, cancelled), with ticks and a legend. */
export function throughputChart(buckets, unit = "hour") {
  const total = buckets.reduce((n, b) => n + b.completed + b.failed + b.cancelled, 0);
  // As wide as it is drawn (at most 1000 units), so its text stays legible on a phone.
  const room = document.getElementById("view")?.clientWidth || 1000;
  const width = Math.max(320, Math.min(1000, room - 40));
  const height = width < 600 ? 200 : 240;
  const pad = { left: 40, right: 10, top: 10, bottom: 28 };
  const max = Math.max(1, ...buckets.map((b) => b.completed + b.failed + b.cancelled));
  const step = niceStep(max);
  const top = Math.ceil(max / step) * step;
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const slot = plotW / Math.max(1, buckets.length);
  const every = Math.max(1, Math.ceil(buckets.length / Math.max(4, Math.floor(width / 90))));
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": `Tasks finished per ${unit}: ${total} in total` });
  for (let v = 0; v <= top; v += step) {
    const y = pad.top + plotH - (v / top) * plotH;
    svg.append(svgEl("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }));
    svg.append(svgEl("text", { x: pad.left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, String(v)));
  }
  buckets.forEach((b, i) => {
    const x = pad.left + i * slot + slot * 0.15;
    let y = pad.top + plotH;
    const group = svgEl("g", { class: "bar" });
    group.append(svgEl("title", {}, `${b.title}\ncompleted ${b.completed}, failed ${b.failed}, cancelled ${b.cancelled}`));
    for (const [key] of OUTCOMES) {
      const hgt = (b[key] / top) * plotH;
      if (hgt <= 0) continue;
      y -= hgt;
      group.append(svgEl("rect", { x, y, width: slot * 0.7, height: hgt, class: `seg ${key}` }));
    }
    group.append(svgEl("rect", { x: pad.left + i * slot, y: pad.top, width: slot, height: plotH, class: "hover" }));
    svg.append(group);
    if ((buckets.length - 1 - i) % every === 0) {
      svg.append(svgEl("text", { x: pad.left + i * slot + slot / 2, y: height - 8, class: "axis", "text-anchor": "middle" }, b.tick));
    }
  });
  const legend = h("div.legend", OUTCOMES.map(([key, name]) =>
    h("span", h(`i.swatch.${key}`), `${name} ${fmtNumber(buckets.reduce((n, b) => n + b[key], 0))}`)));
  return h("div.chart-box", total ? null : h("p.muted", "Nothing finished in this window."), svg, legend);
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
