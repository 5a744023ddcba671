// Tasks: filters, paging, live progress, cancel/retry with confirmation, batch actions. Retry is
// offered only where the API would take it from this role (a maintenance type is admin's).

import { api, enqueueRule, session, taskTypes } from "../api.js";
import { live } from "../live.js";
import {
  PAGE_SIZES, act, badge, clear, confirmAction, empty, errorBox, fmtNumber, h, labelRow, loading,
  pageHeader, pager, progressBar, serialized, setProgress, stateText, table, timeCell, toast,
  updateBar,
} from "../ui.js";

const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];
const ACTIVE = new Set(["pending", "running"]);
const RETRYABLE = new Set(["failed", "cancelled"]);

export function render({ root, query, go }) {
  const filters = {
    status: query.status || "",
    task_type: query.task_type || "",
    data_source_id: query.data_source_id || "",
    schedule_id: query.schedule_id || "",
    q: (query.q || "").slice(0, 255),
    page: Math.max(1, Math.min(1_000_000, Math.round(Number(query.page)) || 1)),
    size: PAGE_SIZES.includes(Number(query.size)) ? Number(query.size) : 20,
    cursor: query.cursor || "", // set when the page was reached with "Next" (any depth)
    before: query.cursor ? "" : query.before || "", // set when reached with "Previous" from there
  };
  // Reached through a place in the list (Next, or Previous from a page reached so): `page` is
  // the number the walk counted, and the way back goes through the list's places too.
  const byPlace = Boolean(filters.cursor || filters.before);
  const selected = new Set();
  const rows = new Map(); // task id -> {row, task}
  let tasks = [];
  let lastAnswer = null;
  let mayEnqueue = null; // (task type) => whether this role may retry it (enqueueRule)

  const listBox = h("div.card.flush", loading());
  const batchBar = h("div.batch-bar", { hidden: true });
  const refresh = h("button.btn.ghost", { type: "button", on: { click: () => reload() } }, "Refresh");
  clear(root,
    pageHeader("Tasks", "Everything queued, running and done, newest first.", refresh),
    filterBar(filters, go),
    batchBar,
    listBox);

  const reload = serialized(async () => {
    try {
      const { page, cursor, before, ...rest } = filters;
      const place = cursor ? { cursor } : before ? { before } : { page };
      const [answer, rule] = await Promise.all([
        api("GET", "/api/sync/tasks", { query: { ...rest, ...place } }),
        enqueueRule(),
      ]);
      mayEnqueue = rule;
      tasks = answer.tasks;
      lastAnswer = answer;
      draw(answer);
    } catch (error) {
      if (error.status === 422 && (error.details || []).some((d) => d.field === "page")) {
        // A page number too deep to count to (an old link): the API serves those by cursor only.
        clear(listBox, empty(`Page ${fmtNumber(filters.page)} is too deep to reach by its number`,
          "Pages by number reach only as far as the list counts its tasks; go on from there with Next."),
        h("p.pad.empty-link", h("a", { href: "#", on: { click: (e) => { e.preventDefault(); go("/tasks", listQuery(filters, { page: 1 })); } } }, "Go to page 1")));
        return;
      }
      clear(listBox, errorBox(error, "Could not load the tasks"));
    }
  });

  // The table is kept between reloads: a row whose task did not change state is reused (its
  // progress and message are updated in place), so buttons do not jump under the pointer.
  let tableParts = null; // {table, tbody, all, pagerBox, pagerKey, labels}

  function draw(answer) {
    for (const id of [...selected]) if (!tasks.some((t) => t.id === id)) selected.delete(id);
    if (!tasks.length) {
      tableParts = null;
      rows.clear();
      const { total, total_pages: pages } = answer.pagination;
      if (byPlace && total > 0) {
        // The tasks around the place this page was reached from are gone (deleted meanwhile).
        clear(listBox, empty("No tasks here any more", "The tasks around this place in the list were deleted."),
          h("p.pad.empty-link", h("a", { href: "#", on: { click: (e) => { e.preventDefault(); go("/tasks", listQuery(filters, { page: 1 })); } } }, "Go to page 1")));
        drawBatch();
        return;
      }
      if (total > 0 && filters.page > pages) {
        // A page past the end (an old link, a size changed): say so and offer the last one.
        clear(listBox, empty(`Page ${fmtNumber(filters.page)} is past the last page`,
          `There are ${fmtNumber(total)} task(s) in ${fmtNumber(pages)} page(s).`),
        h("p.pad.empty-link", h("a", { href: "#", on: { click: (e) => { e.preventDefault(); go("/tasks", { ...filters, page: pages }); } } }, `Go to page ${fmtNumber(pages)}`)));
        drawBatch();
        return;
      }
      const filtered = filters.status || filters.task_type || filters.data_source_id || filters.schedule_id || filters.q;
      clear(listBox, empty(filtered ? "No task matches these filters" : "No tasks yet",
        filtered ? "Change or clear the filters above." : "Tasks appear here as soon as they are created."));
      drawBatch();
      return;
    }
    if (!tableParts) tableParts = buildTable();
    const previous = new Map(rows);
    rows.clear();
    const nodes = tasks.map((task) => {
      const old = previous.get(task.id);
      if (old && old.key === rowKey(task)) {
        old.task = task;
        updateBar(old.bar, task);
        const text = stateText(task);
        if (old.message.textContent !== text) {
          old.message.textContent = text;
          old.message.title = text;
        }
        rows.set(task.id, old);
        return old.row;
      }
      return taskRow(task);
    });
    const current = [...tableParts.tbody.children];
    if (current.length !== nodes.length || current.some((n, i) => n !== nodes[i])) {
      tableParts.tbody.replaceChildren(...nodes);
    }
    tableParts.all.checked = tasks.every((t) => selected.has(t.id));
    const pagerKey = JSON.stringify(answer.pagination);
    if (pagerKey !== tableParts.pagerKey) {
      tableParts.pagerKey = pagerKey;
      // Next goes by the list's cursor (the same cost at any depth); Previous from a page
      // reached so goes back through `before` (never a page number deeper than the API
      // counts); page 1 is always the top of the list by number; other moves by number.
      clear(tableParts.pagerBox, pager(answer.pagination, (page) => go("/tasks", listQuery(filters, { page })), {
        onSize: (size) => go("/tasks", listQuery(filters, { size, page: 1 })),
        next: (cursor) => go("/tasks", listQuery(filters, { cursor, page: filters.page + 1 })),
        previous: (before) => go("/tasks", byPlace && before && filters.page > 2
          ? listQuery(filters, { before, page: filters.page - 1 })
          : listQuery(filters, { page: byPlace ? 1 : Math.min(filters.page - 1, Math.max(1, answer.pagination.total_pages)) })),
        page: filters.page,
      }));
    }
    drawBatch();
  }

  function buildTable() {
    const all = h("input", {
      type: "checkbox", title: "Select all on this page", "aria-label": "Select all",
      on: {
        change: (e) => {
          for (const t of tasks) e.target.checked ? selected.add(t.id) : selected.delete(t.id);
          for (const entry of rows.values()) {
            const box = entry.row.querySelector("td.check input");
            if (box) box.checked = selected.has(entry.task.id);
          }
          drawBatch();
        },
      },
    });
    const headers = [
      session.canOperate ? all : null, "Task", "Type", "Status", "Progress", "Message", "Attempt", "Created",
      session.canOperate ? "" : null,
    ].filter((x) => x !== null);
    const labels = headers.map((x) => (x instanceof Node ? "" : x));
    const tableNode = table(headers, [], { className: "tasks" });
    const pagerBox = h("div");
    clear(listBox, tableNode, pagerBox);
    return { table: tableNode, tbody: tableNode.querySelector("tbody"), all, pagerBox, pagerKey: null, labels };
  }

  function rowKey(task) {
    return [task.status, task.cancel_requested, task.attempt, task.error, mayEnqueue(task.task_type)].join("|");
  }

  function taskRow(task) {
    const bar = progressBar(task);
    const text = stateText(task);
    const message = h("td.message", { title: text }, text);
    const cells = [];
    if (session.canOperate) {
      cells.push(h("td.check", h("input", {
        type: "checkbox", "aria-label": `Select ${task.reference}`, checked: selected.has(task.id),
        on: {
          change: (e) => {
            e.target.checked ? selected.add(task.id) : selected.delete(task.id);
            tableParts.all.checked = tasks.every((t) => selected.has(t.id));
            drawBatch();
          },
        },
      })));
    }
    cells.push(
      h("td", h("a.ref", { href: `#/task/${task.id}` }, task.reference)),
      h("td", h("code", task.task_type), task.data_source_id ? h("div.muted.small", task.data_source_id) : null),
      h("td.status-cell", badge(task.status), task.cancel_requested && task.status === "running" ? h("div.muted.small", "cancelling…") : null),
      h("td.progress-cell", bar),
      message,
      h("td.num.plain", `${task.attempt}/${task.max_attempts}`),
      h("td.nowrap", timeCell(task.created_at)),
    );
    if (session.canOperate) cells.push(h("td.row-actions", actions(task)));
    const row = labelRow(h("tr", { dataset: { id: task.id, status: task.status } }, cells), tableParts.labels);
    rows.set(task.id, { row, bar, message, task, key: rowKey(task) });
    return row;
  }

  function actions(task) {
    const out = [];
    if (ACTIVE.has(task.status) && !task.cancel_requested) {
      out.push(h("button.btn.small.danger-ghost", {
        type: "button", dataset: { action: "cancel" },
        on: { click: (e) => cancel(e.currentTarget, task) },
      }, "Cancel"));
    }
    if (RETRYABLE.has(task.status) && mayEnqueue(task.task_type)) {
      out.push(h("button.btn.small.ghost", {
        type: "button", dataset: { action: "retry" },
        on: { click: (e) => retry(e.currentTarget, task) },
      }, "Retry"));
    }
    return out;
  }

  async function cancel(button, task) {
    const ok = await confirmAction(`Cancel ${task.reference}?`,
      task.status === "running"
        ? "The task is asked to stop at its next checkpoint, and is stopped by force after the grace period."
        : "The task has not started; it will never run.", "Cancel task");
    if (!ok) return;
    await act(button, async () => {
      const t = await api("POST", `/api/sync/tasks/${task.id}/cancel`);
      toast(t.status === "cancelled" ? `${t.reference} cancelled` : `Cancel requested for ${t.reference}`);
      await reload();
    });
  }

  async function retry(button, task) {
    const ok = await confirmAction(`Retry ${task.reference}?`,
      "A new task with the same parameters is created; this one stays as it is.", "Retry");
    if (!ok) return;
    await act(button, async () => {
      const t = await api("POST", `/api/sync/tasks/${task.id}/retry`);
      toast(`Retry created: ${t.reference}`, "success");
      await reload();
    });
  }

  function drawBatch() {
    const chosen = tasks.filter((t) => selected.has(t.id));
    batchBar.hidden = !session.canOperate || chosen.length === 0;
    if (batchBar.hidden) return;
    const cancellable = chosen.filter((t) => ACTIVE.has(t.status)).length;
    const retryable = chosen.filter((t) => RETRYABLE.has(t.status) && mayEnqueue(t.task_type)).length;
    clear(batchBar,
      h("strong", `${chosen.length} selected`),
      h("button.btn.small.danger", { type: "button", disabled: !cancellable, dataset: { action: "batch-cancel" }, on: { click: (e) => batch(e.currentTarget, "cancel", chosen) } }, `Cancel ${cancellable}`),
      h("button.btn.small", { type: "button", disabled: !retryable, dataset: { action: "batch-retry" }, on: { click: (e) => batch(e.currentTarget, "retry", chosen) } }, `Retry ${retryable}`),
      withheldNote(chosen),
      h("button.btn.small.ghost", { type: "button", on: { click: () => { selected.clear(); for (const b of listBox.querySelectorAll("td.check input")) b.checked = false; draw(lastAnswer); } } }, "Clear selection"));
  }

  /** Which selected tasks the batch retry leaves out because this role may not retry them. */
  function withheldNote(chosen) {
    const withheld = chosen.filter((t) => RETRYABLE.has(t.status) && !mayEnqueue(t.task_type));
    if (!withheld.length) return null;
    const why = [...new Set(withheld.map((t) => mayEnqueue.why(t.task_type)))].join("; ");
    return h("span.small.batch-note", { role: "note" }, `${withheld.length} not retried: ${why}`);
  }

  async function batch(button, action, chosen) {
    const wanted = chosen.filter((t) => (action === "cancel"
      ? ACTIVE.has(t.status) : RETRYABLE.has(t.status) && mayEnqueue(t.task_type)));
    const ok = await confirmAction(`${action === "cancel" ? "Cancel" : "Retry"} ${wanted.length} task(s)?`,
      action === "cancel" ? "Pending ones stop at once; running ones are asked to stop."
        : "A new task is created for each; the originals stay as they are.",
      action === "cancel" ? "Cancel tasks" : "Retry tasks");
    if (!ok) return;
    await act(button, async () => {
      const answer = await api("POST", `/api/sync/tasks/batch/${action}`, { body: { ids: wanted.map((t) => t.id) } });
      const failed = answer.results.filter((r) => !r.ok);
      if (failed.length) toast(`${failed.length} refused: ${failed[0].error}`, "error");
      else toast(`${answer.results.length} task(s) ${action === "cancel" ? "cancelled" : "retried"}`, "success");
      selected.clear();
      await reload();
    });
  }

  // Live: progress in place; anything else (created, finished, ...) reloads the page of the list.
  let reloadTimer = null;
  const unsubscribe = live.subscribe((events) => {
    let structural = false;
    for (const event of events) {
      const entry = rows.get(event.id);
      if (event.event === "progress") {
        if (!entry) continue;
        setProgress(entry.bar, event.progress);
        if (event.message) {
          entry.message.textContent = event.message;
          entry.message.title = event.message;
        }
      } else if (event.event === "created" || entry) {
        structural = true;
      }
    }
    if (structural && !reloadTimer) {
      // Many tasks starting or ending at once: one reload for the lot, a moment later.
      reloadTimer = setTimeout(() => {
        reloadTimer = null;
        reload();
      }, 300);
    }
  });
  live.setPoller(reload);

  reload();
  return () => {
    unsubscribe();
    clearTimeout(reloadTimer);
  };
}

/** The list's query: the filters with `changes`; defaults left out of the address. A move
 * names its place (`cursor` or `before`) or none: a page by number. */
function listQuery(filters, changes = {}) {
  const out = { ...filters, cursor: "", before: "", ...changes };
  if (out.page === 1) out.page = "";
  if (out.size === 20) out.size = "";
  return out;
}

function filterBar(filters, go) {
  const status = h("select#f-status", { name: "status" },
    h("option", { value: "" }, "Any status"),
    STATUSES.map((s) => h("option", { value: s, selected: filters.status === s }, s)));
  // The known types (GET /api/sync/task-types); a type in the address that the daemon does
  // not run stays selectable, so the filter shows what it filters on.
  const type = h("select#f-type", { name: "task_type" },
    h("option", { value: "" }, "Any type"),
    filters.task_type ? h("option", { value: filters.task_type, selected: true }, filters.task_type) : null);
  const source = h("input#f-source", { name: "data_source_id", placeholder: "Data source id", value: filters.data_source_id, maxlength: 64 });
  const search = h("input#f-search", { type: "search", name: "q", placeholder: "Reference, id or dedupe key", value: filters.q, maxlength: 255 });
  taskTypes().then((types) => {
    for (const { task_type: name } of types) {
      if (name !== filters.task_type) type.append(h("option", { value: name }, name));
    }
  }).catch(() => {});
  const form = h("form.filters", {
    on: {
      submit: (e) => {
        e.preventDefault();
        go("/tasks", listQuery(filters, { status: status.value, task_type: type.value, data_source_id: source.value.trim(), q: search.value.trim(), page: 1 }));
      },
    },
  },
  h("label", "Status", status),
  h("label", "Type", type),
  h("label", "Data source", source),
  h("label", "Search", search),
  h("div.filter-actions",
    h("button.btn.primary", { type: "submit" }, "Apply"),
    h("button.btn.ghost", { type: "button", on: { click: () => go("/tasks") } }, "Clear")));
  status.addEventListener("change", () => form.requestSubmit());
  type.addEventListener("change", () => form.requestSubmit());
  return form;
}
