// Stock upload: send an .xlsx (upload progress), then follow the import task to its end.

import { api, session, upload } from "../api.js";
import { live } from "../live.js";
import { badge, clear, errorBox, fmtNumber, h, json, pageHeader, progressBar, setProgress, serialized, stateText, updateBar } from "../ui.js";

const FINISHED = new Set(["completed", "failed", "cancelled"]);

export function render({ root }) {
  const status = h("div");
  if (!session.canOperate) {
    clear(root, pageHeader("Stock upload", "Import a stock file (.xlsx)."),
      h("div.alert.info", "Your role can only read. Ask an operator to import stock files."));
    return null;
  }
  const file = h("input#stock-file", { type: "file", name: "file", accept: ".xlsx,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", required: true });
  const submit = h("button.btn.primary", { type: "submit" }, "Upload and import");
  const form = h("form.card.upload-form", { on: { submit: (e) => { e.preventDefault(); start(); } } },
    h("label.drop", h("strong", "Choose a stock file"),
      h("span.muted", "An .xlsx sheet with partnumber, vendor, description, qty, price and warehouse columns (English or Russian headers)."),
      file),
    submit);
  clear(root, pageHeader("Stock upload", "Import a stock file; valid rows go to stock_log, bad rows become record errors."), form, status);
  let followed = null;

  async function start() {
    const chosen = file.files[0];
    if (!chosen) return;
    submit.disabled = true;
    const bar = progressBar({ progress: 0, status: "running" });
    const text = h("p.muted", `Uploading ${chosen.name} (${fmtNumber(chosen.size)} bytes)…`);
    clear(status, h("div.card", h("h2", "Upload"), bar, text));
    let task;
    try {
      task = await upload("/api/imports/stock", "file", chosen, (f) => setProgress(bar, Math.round(f * 100)));
    } catch (error) {
      clear(status, errorBox(error, "The upload was refused"));
      submit.disabled = false;
      return;
    }
    followed = { id: task.id, bar: progressBar(task), text: h("p.muted", stateText(task)) };
    clear(status, h("div.card",
      h("h2", "Import ", h("a", { href: `#/task/${task.id}` }, task.reference), " ", h("span#import-status", badge(task.status))),
      followed.bar, followed.text));
    submit.disabled = false;
  }

  const poll = serialized(async () => {
    if (!followed) return;
    try {
      show(await api("GET", `/api/sync/tasks/${followed.id}`));
    } catch (error) {
      clear(status, errorBox(error, "Lost track of the import task"));
      followed = null;
    }
  });

  function show(task) {
    if (!followed) return;
    updateBar(followed.bar, task);
    followed.text.textContent = stateText(task);
    const badgeBox = status.querySelector("#import-status");
    if (badgeBox) clear(badgeBox, badge(task.status));
    if (FINISHED.has(task.status)) {
      followed = null;
      status.firstChild.append(h("h2", "Result"), task.result ? json(task.result) : h("p.muted", "No result."),
        task.error_count ? h("p", h("a", { href: `#/task/${task.id}` }, `${fmtNumber(task.error_count)} rejected row(s)`)) : null);
    }
  }

  const unsubscribe = live.subscribe((events) => {
    if (!followed) return;
    for (const event of events) {
      if (event.id !== followed.id) continue;
      if (event.event === "progress") {
        setProgress(followed.bar, event.progress);
        followed.text.textContent = event.message || "";
      } else if (event.task) {
        show(event.task);
      }
    }
  });
  live.setPoller(poll);
  const timer = setInterval(poll, 2000);
  return () => {
    unsubscribe();
    clearInterval(timer);
  };
}
