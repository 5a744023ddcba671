// Schedules: the periodic jobs with their next and last run; run now, pause, resume.

import { api, session } from "../api.js";
import { act, badge, clear, confirmAction, empty, errorBox, fmtTime, h, loading, pageHeader, serialized, table, timeCell, toast } from "../ui.js";

export function render({ root }) {
  const box = h("div.card.flush", loading());
  clear(root, pageHeader("Schedules", "Periodic jobs: each fire enqueues one task."), box);

  const reload = serialized(async () => {
    let answer;
    try {
      answer = await api("GET", "/api/schedules");
    } catch (error) {
      clear(box, errorBox(error, "Could not load the schedules"));
      return;
    }
    const schedules = answer.schedules || [];
    if (!schedules.length) {
      clear(box, empty("No schedules", "Periodic jobs are configured with SYNCD_*_CRON settings."));
      return;
    }
    const headers = ["Job", "Task type", "Cron", "Next run", "Last run", "State"];
    if (session.canOperate) headers.push("");
    clear(box, table(headers, schedules.map(row)));
  });

  function row(s) {
    const cells = [
      h("td", h("strong", s.id)),
      h("td", h("code", s.task_type)),
      h("td", h("code", s.cron), h("div.muted.small", s.timezone)),
      h("td.nowrap", s.paused ? h("span.muted", "paused") : h("span", { title: fmtTime(s.next_run_at) }, timeCell(s.next_run_at))),
      h("td.nowrap", s.last_run_at ? timeCell(s.last_run_at) : "never",
        s.last_task_id ? h("div.small", h("a", { href: `#/task/${s.last_task_id}` }, "last task")) : null),
      h("td", s.paused ? badge("cancelled", "paused") : badge("completed", "active")),
    ];
    if (session.canOperate) {
      cells.push(h("td.row-actions",
        h("button.btn.small", { type: "button", dataset: { action: "run" }, on: { click: (e) => run(e.currentTarget, s) } }, "Run now"),
        s.paused
          ? h("button.btn.small.ghost", { type: "button", dataset: { action: "resume" }, on: { click: (e) => toggle(e.currentTarget, s, "resume") } }, "Resume")
          : h("button.btn.small.ghost", { type: "button", dataset: { action: "pause" }, on: { click: (e) => toggle(e.currentTarget, s, "pause") } }, "Pause")));
    }
    return h("tr", { dataset: { id: s.id } }, cells);
  }

  async function run(button, s) {
    if (!(await confirmAction(`Run ${s.id} now?`, `A ${s.task_type} task is enqueued at once.`, "Run now"))) return;
    await act(button, async () => {
      const task = await api("POST", `/api/schedules/${encodeURIComponent(s.id)}/run`);
      toast(`${s.id}: task ${task.reference || task.id} enqueued`, "success");
      await reload();
    });
  }

  async function toggle(button, s, action) {
    if (action === "pause" && !(await confirmAction(`Pause ${s.id}?`, "It will not fire until resumed (kept across restarts).", "Pause"))) return;
    await act(button, async () => {
      await api("POST", `/api/schedules/${encodeURIComponent(s.id)}/${action}`);
      toast(`${s.id} ${action === "pause" ? "paused" : "resumed"}`);
      await reload();
    });
  }

  reload();
  const timer = setInterval(reload, 10000);
  return () => clearInterval(timer);
}
