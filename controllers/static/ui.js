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

// ---- formatting ------------------------------------------------------------------------------

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toLocaleString(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
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

export function timeCell(iso) {
  return h("time", { datetime: iso || "", title: iso ? fmtTime(iso) : "" }, relTime(iso));
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

export function progressBar(task) {
  const pct = Math.max(0, Math.min(100, task.progress || 0));
  const bar = h("div.progress", { dataset: { status: task.status } },
    h("div.progress-fill", { style: `width:${pct}%` }),
    h("span.progress-label", `${pct}%`));
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuenow", String(pct));
  return bar;
}

export function setProgress(bar, pct) {
  const value = Math.max(0, Math.min(100, pct || 0));
  bar.querySelector(".progress-fill").style.width = `${value}%`;
  bar.querySelector(".progress-label").textContent = `${value}%`;
  bar.setAttribute("aria-valuenow", String(value));
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

export function table(headers, rows, { className = "" } = {}) {
  return h(`table.table${className ? "." + className : ""}`,
    h("thead", h("tr", headers.map((x) => (x instanceof Node ? h("th", x) : h("th", x))))),
    h("tbody", rows));
}

/**
 * Previous / next buttons and where we are. `next(cursor)`, when given, turns the page after
 * this one through the list's cursor (`pagination.next_cursor`), which costs the same at any
 * depth; without it, pages go by number. A total the API did not count to the end
 * (`total_exact: false`) reads "more than N".
 */
export function pager(pagination, go, { next } = {}) {
  const { page, total_pages: pages, total } = pagination;
  const last = Math.max(1, pages);
  const counted = pagination.total_exact !== false;
  const more = next ? Boolean(pagination.next_cursor) : page < last;
  return h("div.pager",
    h("button.btn.small.ghost", { type: "button", disabled: page <= 1, on: { click: () => go(page - 1) } }, "‹ Previous"),
    h("span.muted", counted
      ? `Page ${page} of ${last} · ${fmtNumber(total)} total`
      : `Page ${page} · more than ${fmtNumber(total)} tasks`),
    h("button.btn.small.ghost", {
      type: "button", disabled: !more,
      on: { click: () => (next ? next(pagination.next_cursor) : go(page + 1)) },
    }, "Next ›"));
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
