// Small DOM helpers shared by the pages: element builder, formatting, status badges,
// progress bars, tables, pagers, error boxes, toasts and the confirmation dialog.

/** h("div.card#id", {attrs, on: {click}}, ...children) */
export function h(spec, props = {}, ...children) {
  const [, tag = "div", rest = ""] = spec.match(/^([a-z0-9]+)?(.*)$/i);
  const node = document.createElement(tag || "div");
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") node.classList.add(part.slice(1));
    else node.id = part.slice(1);
  }
  if (props === null || typeof props !== "object" || props instanceof Node || Array.isArray(props)) {
    children.unshift(props);
    props = {};
  }
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "on") {
      for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key === "text") {
      node.textContent = value;
    } else if (key in node && key !== "list" && key !== "form") {
      node[key] = value;
    } else {
      node.setAttribute(key, value === true ? "" : value);
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

// ---- preferences: time zone of the times shown, colour theme (kept in localStorage) -------------

const ZONE_KEY = "syncd.zone";
const THEME_KEY = "syncd.theme";

export const prefs = {
  /** "local" (the browser's zone) or "utc". */
  get zone() {
    return localStorage.getItem(ZONE_KEY) === "utc" ? "utc" : "local";
  },
  set zone(value) {
    localStorage.setItem(ZONE_KEY, value === "utc" ? "utc" : "local");
  },
  /** "auto" (follow the system), "light" or "dark". */
  get theme() {
    const value = localStorage.getItem(THEME_KEY);
    return value === "light" || value === "dark" ? value : "auto";
  },
  set theme(value) {
    if (value === "light" || value === "dark") localStorage.setItem(THEME_KEY, value);
    else localStorage.removeItem(THEME_KEY);
    applyTheme();
  },
};

/** Put the chosen theme on <html> (the CSS reads data-theme; none: follow the system). */
export function applyTheme() {
  const theme = prefs.theme;
  if (theme === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}

function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

/** The zone times are shown in: "UTC", or the browser's offset at that moment ("UTC+03:00"). */
export function zoneLabel(date = new Date()) {
  if (prefs.zone === "utc") return "UTC";
  const minutes = -date.getTimezoneOffset();
  if (minutes === 0) return "UTC+00:00";
  const sign = minutes > 0 ? "+" : "-";
  const a = Math.abs(minutes);
  return `UTC${sign}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

/** The calendar parts of a moment in the chosen zone. */
export function zoned(date) {
  const utc = prefs.zone === "utc";
  return {
    year: utc ? date.getUTCFullYear() : date.getFullYear(),
    month: (utc ? date.getUTCMonth() : date.getMonth()) + 1,
    day: utc ? date.getUTCDate() : date.getDate(),
    hour: utc ? date.getUTCHours() : date.getHours(),
    minute: utc ? date.getUTCMinutes() : date.getMinutes(),
    second: utc ? date.getUTCSeconds() : date.getSeconds(),
  };
}

/** "2026-03-01 13:12:03 UTC+03:00" (or "... UTC"): every time shown says its zone. */
export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const p = zoned(d);
  return `${p.year}-${pad(p.month)}-${pad(p.day)} ${pad(p.hour)}:${pad(p.minute)}:${pad(p.second)} ${zoneLabel(d)}`;
}

export function relTime(iso) {
  if (!iso) return "—";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  const future = s < 0;
  const a = Math.abs(s);
  let text;
  if (a < 5) return future ? "in a moment" : "just now";
  if (a < 60) text = `${Math.round(a)} s`;
  else if (a < 3600) text = `${Math.round(a / 60)} min`;
  else if (a < 86400) text = `${Math.round(a / 3600)} h`;
  else text = `${Math.round(a / 86400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}

/** A time in a table: the moment with its zone, and how long ago (or until) below it. */
export function timeCell(iso) {
  if (!iso) return h("span.muted", "—");
  const text = fmtTime(iso);
  const cut = text.lastIndexOf(" ");
  return h("time.when", { datetime: iso, title: text },
    h("span", text.slice(0, cut)),
    h("span.muted.small", `${text.slice(cut + 1)} · ${relTime(iso)}`));
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export function fmtNumber(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString();
}

export function json(value) {
  return h("pre.json", JSON.stringify(value, null, 2));
}

// ---- status, progress --------------------------------------------------------------------------

export function badge(status, label) {
  return h(`span.badge.s-${status}`, { dataset: { status } }, label || status);
}

const FINISHED = new Set(["completed", "failed", "cancelled"]);

/** The percentage a bar shows: where the work is, or where it stopped. A pending task has not
 * started its next attempt, so it shows nothing of an earlier one; only a completed task is
 * at 100% because it completed. */
export function shownProgress(task) {
  if (task.status === "pending") return 0;
  return Math.max(0, Math.min(100, task.progress || 0));
}

function progressText(task, pct) {
  if (task.status === "pending") return "waiting";
  return `${pct}%`;
}

export function progressBar(task) {
  const pct = shownProgress(task);
  const label = h("span.progress-label", progressText(task, pct));
  const bar = h("div.progress", { dataset: { status: task.status } },
    h("div.progress-track", h("div.progress-fill", { style: `width:${pct}%` })),
    label);
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuenow", String(pct));
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-label", describeProgress(task, pct));
  return bar;
}

function describeProgress(task, pct) {
  if (task.status === "pending") return "waiting to start";
  if (FINISHED.has(task.status) && task.status !== "completed") return `stopped at ${pct}%`;
  return `${pct}%`;
}

/** Move a running task's bar (live progress). */
export function setProgress(bar, pct) {
  const value = Math.max(0, Math.min(100, pct || 0));
  bar.querySelector(".progress-fill").style.width = `${value}%`;
  bar.querySelector(".progress-label").textContent = `${value}%`;
  bar.setAttribute("aria-valuenow", String(value));
  bar.setAttribute("aria-label", `${value}%`);
}

/** Redraw a bar for a task's current state (status and progress). */
export function updateBar(bar, task) {
  const pct = shownProgress(task);
  bar.dataset.status = task.status;
  bar.querySelector(".progress-fill").style.width = `${pct}%`;
  bar.querySelector(".progress-label").textContent = progressText(task, pct);
  bar.setAttribute("aria-valuenow", String(pct));
  bar.setAttribute("aria-label", describeProgress(task, pct));
}

function ordinal(n) {
  const suffix = n % 100 >= 11 && n % 100 <= 13 ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th";
  return `${n}${suffix}`;
}

function future(iso) {
  return !!iso && new Date(iso).getTime() > Date.now();
}

/** Why a pending task waits, in words, from the API's `waiting` (the reasons of
 * schedule/waiting.py; from its run_after and attempt alone when the answer has none). */
export function waitingText(task) {
  const w = task.waiting || {};
  const next = `attempt ${task.attempt + 1} of ${task.max_attempts}`;
  const due = w.due_at || task.run_after;
  const slots = w.slots || {};
  const busy = `${slots.busy ?? "?"}/${slots.total ?? "?"} busy`;
  const place = w.position ? `, ${ordinal(w.position)} in line` : "";
  if (w.reason === "retry_backoff" || (!w.reason && task.attempt && future(due))) {
    return `retry: ${next} at ${fmtTime(due)}`;
  }
  if (w.reason === "due_later" || (!w.reason && future(due))) return `due at ${fmtTime(due)}`;
  if (w.reason === "external_worker") return `waiting for an external worker of ${task.service || "its service"}${place}`;
  if (w.reason === "no_node") return "waiting: no daemon on this database is running";
  if (w.reason === "type_limit") {
    const limit = w.type_limit || {};
    return `waiting: ${task.task_type} limit reached (${limit.running ?? "?"}/${limit.limit ?? "?"} running)`;
  }
  if (w.reason === "no_free_slot") return `waiting for a free slot (${busy}${place})`;
  if (w.reason === "queued") return `queued: a slot is free (${busy}${place}), starts within a poll`;
  return task.attempt ? `queued: ${next}` : "queued";
}

/** What a task is doing, in words: why a pending one waits, a failed one's error, else its
 * last message. */
export function stateText(task) {
  if (task.status === "pending") return waitingText(task);
  if (task.status === "failed") return task.error || task.message || "";
  return task.message || "";
}

// ---- blocks --------------------------------------------------------------------------------------

export function errorBox(error, title = "Something went wrong") {
  const status = error.status ? `HTTP ${error.status}${error.code ? ` · ${error.code}` : ""}` : "";
  let hint = null;
  if (error.status === 404 && / not found on this daemon$/.test(error.message)) {
    hint = "This daemon does not offer this part of the API yet.";
  }
  return h("div.alert.error", { role: "alert" },
    h("strong", title),
    h("p.error-message", error.message || String(error)),
    hint && h("p.muted", hint),
    status && h("p.muted.small", status));
}

export function empty(title, text) {
  return h("div.empty", h("div.empty-icon", { "aria-hidden": "true" }), h("strong", title),
    text && h("p.muted", text));
}

export function loading() {
  return h("div.loading", h("span.spinner", { "aria-hidden": "true" }), "Loading…");
}

/** A table in a box that scrolls sideways when it must (with a cue); each cell is labelled
 * with its column's header (shown beside the value when the table is drawn as cards on a
 * narrow screen). */
export function table(headers, rows, { className = "" } = {}) {
  const labels = headers.map((x) => (x instanceof Node ? "" : String(x)));
  for (const row of rows) labelRow(row, labels);
  return scrollCue(h("div.table-scroll",
    h(`table.table${className ? "." + className : ""}`,
      h("thead", h("tr", headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", rows))));
}

/** Mark the sides of a sideways-scrolling box that have more to see (`data-more`: left,
 * right), kept up to date as it scrolls or changes size. */
export function scrollCue(box) {
  const mark = () => {
    const more = [];
    if (box.scrollLeft > 1) more.push("left");
    if (box.scrollLeft + box.clientWidth < box.scrollWidth - 1) more.push("right");
    if (more.length) box.dataset.more = more.join(" ");
    else delete box.dataset.more;
  };
  box.addEventListener("scroll", mark, { passive: true });
  new ResizeObserver(mark).observe(box);
  return box;
}

/** Label a row's cells with the column names (`data-label`), for the card layout. */
export function labelRow(row, labels) {
  [...row.children].forEach((cell, i) => {
    if (labels[i]) cell.dataset.label = labels[i];
  });
  return row;
}

export const PAGE_SIZES = [20, 50, 100, 200, 500];

/** First / previous / a page number to jump to / next / last, and (with `onSize`) the page
 * size. A number past the last page or below 1 is brought back in range. With `next(cursor)`,
 * "Next" turns the page through the list's cursor (`pagination.next_cursor`, the same cost at
 * any depth), with `previous(cursor)` "Previous" is handed `pagination.prev_cursor` (the
 * caller decides how to go back), and `page` says which page this is (an answer by cursor does
 * not know). A total the API did not count to the end (`total_exact: false`) reads "more than
 * N"; there is no last page to jump to, and a page number to jump to stays within the counted
 * pages (`total_pages`), the only ones the API serves by number: deeper pages are reached
 * with "Next". */
export function pager(pagination, go, { onSize = null, next = null, previous = null, page: shown = null } = {}) {
  const { size, total_pages: pages, total } = pagination;
  const page = shown ?? pagination.page;
  const counted = pagination.total_exact !== false;
  const last = Math.max(1, pages);
  const jump = h("input", {
    type: "number", min: 1, max: last, value: page, inputmode: "numeric",
    "aria-label": `Page number, 1 to ${last}`, name: "page",
    title: counted ? null : `Pages past ${fmtNumber(last)} are reached with Next`,
  });
  const form = h("form.pager-jump", {
    noValidate: true, // out of range is brought back in range, not refused
    on: {
      submit: (e) => {
        e.preventDefault();
        const wanted = Math.min(last, Math.max(1, Math.round(Number(jump.value)) || 1));
        go(wanted);
      },
    },
  }, "Page", jump, counted ? `of ${fmtNumber(last)}` : `of more than ${fmtNumber(last)}`,
  h("button.btn.small.ghost", { type: "submit" }, "Go"));
  const button = (label, target, disabled, action) => h("button.btn.small.ghost", {
    type: "button", disabled, dataset: { page: action }, "aria-label": label,
    on: { click: () => go(target) },
  }, label);
  const sizes = onSize && h("label.pager-jump", "Per page",
    h("select", { "aria-label": "Tasks per page", on: { change: (e) => onSize(Number(e.target.value)) } },
      PAGE_SIZES.map((n) => h("option", { value: n, selected: n === size }, String(n)))));
  return h("div.pager",
    h("div.pager-nav",
      button("« First", 1, page <= 1, "first"),
      previous
        ? h("button.btn.small.ghost", {
          type: "button", disabled: page <= 1, dataset: { page: "previous" }, "aria-label": "‹ Previous",
          on: { click: () => previous(pagination.prev_cursor) },
        }, "‹ Previous")
        : button("‹ Previous", Math.min(page - 1, last), page <= 1, "previous"),
      form,
      next
        ? h("button.btn.small.ghost", {
          type: "button", disabled: !pagination.next_cursor, dataset: { page: "next" }, "aria-label": "Next ›",
          on: { click: () => next(pagination.next_cursor) },
        }, "Next ›")
        : button("Next ›", page + 1, page >= last, "next"),
      button("Last »", last, !counted || page >= last, "last")),
    h("span.muted", counted ? `${fmtNumber(total)} total` : `more than ${fmtNumber(total)}`),
    sizes);
}

export function pageHeader(title, subtitle, ...actions) {
  return h("div.page-header",
    h("div", h("h1", title), subtitle && h("p.muted", subtitle)),
    h("div.actions", actions));
}

// ---- toasts and confirmation ----------------------------------------------------------------------

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const node = h(`div.toast.${kind}`, { role: kind === "error" ? "alert" : "status" }, message);
  box.append(node);
  setTimeout(() => node.classList.add("leaving"), 4200);
  setTimeout(() => node.remove(), 4600);
}

/** Ask before doing something; resolves true when confirmed. */
export function confirmAction(title, text, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

/** Run an async action from a button: disabled while it runs, errors shown as a toast. */
export async function act(button, fn) {
  if (button) button.disabled = true;
  try {
    return await fn();
  } catch (error) {
    toast(error.message || String(error), "error");
    return undefined;
  } finally {
    if (button && button.isConnected) button.disabled = false;
  }
}

/** Wrap a reload function so overlapping calls (polling, events) collapse into one. */
export function serialized(fn) {
  let running = null;
  let again = false;
  const run = async () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await fn();
        } while (again);
      } finally {
        running = null;
      }
    })();
    return running;
  };
  return run;
}
