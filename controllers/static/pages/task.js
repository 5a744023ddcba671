// One task: status, live progress, parameters, result, attempts and per-record errors (paged).

import { api, enqueueRule, session } from "../api.js";
import { live } from "../live.js";
import {
  act, badge, clear, confirmAction, empty, errorBox, fmtDuration, fmtNumber, fmtTime, h, json,
  loading, pager, progressBar, serialized, setProgress, table, timeCell, toast, waitingText,
} from "../ui.js";

export function render({ root, params, query, go }) {
  const key = params[0];
  // The record errors' page: by number (`epage`), or through a place in them (`ecursor`: the
  // page after one, `ebefore`: the page before one; `epage` is then the number the walk counted),
  // as the task list pages.
  const errorPage = Math.max(1, Math.round(Number(query.epage)) || 1);
  const errorPlace = query.ecursor ? { cursor: query.ecursor } : query.ebefore ? { before: query.ebefore } : null;
  let task = null;
  let mayEnqueue = null; // (task type) => whether this role may retry it (enqueueRule)
  let bar = null;
  let messageNode = null;
  let rowsNode = null;

  clear(root, loading());

  const reload = serialized(async () => {
    try {
      [task, mayEnqueue] = await Promise.all([
        api("GET", `/api/sync/tasks/${encodeURIComponent(key)}`),
        enqueueRule(),
      ]);
    } catch (error) {
      clear(root, back(), errorBox(error, `Could not load task ${key}`));
      return;
    }
    draw();
  });

  function draw() {
    bar = progressBar(task);
    messageNode = h("span.live-message", task.status === "pending" ? "" : task.message || "");
    rowsNode = h("span", task.status === "pending" ? "" : rowsText(task));
    const errorsBox = h("div.card.flush", loading());
    clear(root,
      back(),
      h("div.page-header",
        h("div",
          h("h1", h("span.ref-title", task.reference), " ", badge(task.status)),
          h("p.muted", h("code", task.task_type), ` · id ${task.id}`,
            task.retry_of ? [" · retry of ", h("a", { href: `#/task/${task.retry_of}` }, "the original task")] : null)),
        h("div.actions", actions())),
      h("div.card",
        h("div.progress-row", bar),
        h("p.progress-text", messageNode, " ", h("span.muted", rowsNode)),
        task.status === "pending" ? h("div.alert.wait#waiting", { role: "status" }, h("strong", "Waiting: "), waitingText(task),
          task.error ? h("p.muted", `The last attempt failed: ${task.error}`) : null) : null,
        task.cancel_requested && task.status === "running" ? h("p.warn", "Cancel requested: the task stops at its next checkpoint.") : null,
        task.error && task.status !== "pending" ? h("div.alert.error", h("strong", "Error"), h("p.error-message", task.error)) : null),
      h("div.grid-2",
        h("div.card", h("h2", "Details"), details()),
        h("div.card", h("h2", "Parameters"), json(task.parameters),
          h("h2", "Result"), task.result === null ? h("p.muted#no-result", noResult(task)) : json(task.result))),
      h("div.card.flush", h("h2.pad", "Attempts"), attempts()),
      h("div.section-title", h("h2", "Record errors"), h("span.muted", `${fmtNumber(task.error_count)} recorded`)),
      errorsBox);
    loadErrors(errorsBox);
  }

  function back() {
    return h("a.back", { href: "#/tasks" }, "‹ All tasks");
  }

  function actions() {
    if (!session.canOperate) return [];
    const out = [];
    if ((task.status === "pending" || task.status === "running") && !task.cancel_requested) {
      out.push(h("button.btn.danger", { type: "button", dataset: { action: "cancel" }, on: { click: (e) => cancel(e.currentTarget) } }, "Cancel task"));
    }
    if ((task.status === "failed" || task.status === "cancelled") && mayEnqueue(task.task_type)) {
      out.push(h("button.btn.primary", { type: "button", dataset: { action: "retry" }, on: { click: (e) => retry(e.currentTarget) } }, "Retry"));
    } else if (task.status === "failed" || task.status === "cancelled") {
      // Not offered (the API would refuse it with 403): say why, where Retry would be.
      out.push(h("p.muted.small.action-note", `No Retry: ${mayEnqueue.why(task.task_type)}.`));
    }
    return out;
  }

  async function cancel(button) {
    if (!(await confirmAction(`Cancel ${task.reference}?`, "Running tasks stop at their next checkpoint (or by force after the grace period).", "Cancel task"))) return;
    await act(button, async () => {
      const t = await api("POST", `/api/sync/tasks/${task.id}/cancel`);
      toast(t.status === "cancelled" ? `${t.reference} cancelled` : `Cancel requested for ${t.reference}`);
      await reload();
    });
  }

  async function retry(button) {
    if (!(await confirmAction(`Retry ${task.reference}?`, "A new task with the same parameters is created.", "Retry"))) return;
    await act(button, async () => {
      const t = await api("POST", `/api/sync/tasks/${task.id}/retry`);
      toast(`Retry created: ${t.reference}`, "success");
      go(`/task/${t.id}`);
    });
  }

  function details() {
    const duration = task.started_at && task.finished_at
      ? fmtDuration((new Date(task.finished_at) - new Date(task.started_at)) / 1000) : "—";
    const rows = [
      ["Priority", task.priority],
      ["Data source", task.data_source_id || "—"],
      ["Interface", task.interface_id || "—"],
      ["Attempt", `${task.attempt} of ${task.max_attempts}`],
      ["Created", fmtTime(task.created_at)],
      ["Run after", task.status === "pending" ? fmtTime(task.run_after) : "—"],
      ["Started", fmtTime(task.started_at)],
      ["Finished", fmtTime(task.finished_at)],
      ["Duration", duration],
      ["Node", task.lease_owner || (task.attempts.length ? task.attempts[task.attempts.length - 1].node_id : "—")],
      ["Timeout", task.timeout_s ? fmtDuration(task.timeout_s) : "handler default"],
      ["Dedupe key", task.dedupe_key || "—"],
    ];
    return h("dl.details", rows.map(([k, v]) => [h("dt", k), h("dd", String(v))]));
  }

  function attempts() {
    if (!task.attempts.length) return h("p.muted.pad", "Not started yet.");
    return table(["#", "Node", "Started", "Finished", "Outcome", "Error"], task.attempts.map((a) =>
      h("tr",
        h("td.num.plain", a.attempt),
        h("td", a.node_id),
        h("td.nowrap", timeCell(a.started_at)),
        h("td.nowrap", timeCell(a.finished_at)),
        h("td", a.outcome ? badge(outcomeStatus(a.outcome), a.outcome) : badge("running")),
        h("td.message", a.error || ""))));
  }

  async function loadErrors(box) {
    if (!task.error_count) {
      clear(box, empty("No record errors", "Every record this task processed so far was accepted."));
      return;
    }
    try {
      const answer = await api("GET", `/api/sync/tasks/${task.id}/errors`, { query: { ...(errorPlace || { page: errorPage }), size: 20 } });
      clear(box,
        table(["Position", "Reason", "Record", "Attempt"], answer.errors.map((e) =>
          h("tr",
            h("td.num.plain", e.position ?? "—"),
            h("td.message", e.reason),
            h("td", h("code.record", JSON.stringify(e.record))),
            h("td.num.plain", e.attempt)))),
        pager(answer.pagination, (page) => go(`/task/${key}`, { epage: page }), {
          page: errorPage,
          next: (cursor) => go(`/task/${key}`, { epage: errorPage + 1, ecursor: cursor }),
          previous: (before) => go(`/task/${key}`, errorPlace && before && errorPage > 2
            ? { epage: errorPage - 1, ebefore: before }
            : { epage: errorPlace ? 1 : Math.min(errorPage - 1, Math.max(1, answer.pagination.total_pages)) }),
        }));
    } catch (error) {
      clear(box, errorBox(error, "Could not load the record errors"));
    }
  }

  const unsubscribe = live.subscribe((events) => {
    if (!task) return;
    for (const event of events) {
      if (event.id !== task.id) continue;
      if (event.event === "progress") {
        setProgress(bar, event.progress);
        messageNode.textContent = event.message || "";
        rowsNode.textContent = rowsText(event);
      } else {
        reload();
      }
    }
  });
  live.setPoller(reload);
  reload();
  return unsubscribe;
}

/** Why there is no result: it has not ended, or it ended without one. */
function noResult(task) {
  return {
    pending: "No result yet: the task has not run to its end.",
    running: "No result yet: the task is running.",
    completed: "No result: the task completed without one.",
    failed: "No result: the task failed (its error is above).",
    cancelled: "No result: the task was cancelled.",
  }[task.status] || "No result.";
}

function rowsText(t) {
  if (t.total_rows) return `${fmtNumber(t.processed_rows)} of ${fmtNumber(t.total_rows)} rows`;
  if (t.processed_rows) return `${fmtNumber(t.processed_rows)} rows`;
  return "";
}

function outcomeStatus(outcome) {
  return { completed: "completed", failed: "failed", cancelled: "cancelled", retry: "pending", timeout: "failed", lost: "failed", released: "pending" }[outcome] || "pending";
}
