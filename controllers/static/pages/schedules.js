// Schedules: every schedule (built-in, settings file, API) with its trigger in words, next fire
// and last run; a form that checks the trigger as you type and previews the next 5 fires; run
// now, pause with a note, resume, backfill, delete; a link to each schedule's tasks. Run now and
// Backfill enqueue by hand: offered only where the API would take them from this role.

import { api, enqueueRule, session } from "../api.js";
import {
  act, badge, clear, confirmAction, empty, errorBox, fmtTime, h, loading, pageHeader,
  serialized, table, timeCell, toast,
} from "../ui.js";

const OVERLAP = ["skip", "queue_one", "cancel_previous", "allow"];
const CATCH_UP = ["latest", "none", "all"];
const path = (id, action = "") => `/api/schedules/${encodeURIComponent(id)}${action ? `/${action}` : ""}`;

export function render({ root }) {
  const box = h("div.card.flush", loading());
  const formBox = h("div");
  const add = session.isAdmin
    ? h("button.btn", { type: "button", dataset: { action: "new" }, on: { click: () => openForm(null) } }, "New schedule")
    : null;
  clear(root, pageHeader("Schedules", "Each fire enqueues one task, on whichever daemon claims it.", add), formBox, box);

  let mayEnqueue = null; // (task type) => whether this role may enqueue it by hand (enqueueRule)

  const reload = serialized(async () => {
    let answer;
    try {
      [answer, mayEnqueue] = await Promise.all([api("GET", "/api/schedules"), enqueueRule()]);
    } catch (error) {
      clear(box, errorBox(error, "Could not load the schedules"));
      return;
    }
    const schedules = answer.schedules || [];
    if (!schedules.length) {
      clear(box, empty("No schedules", "Create one with “New schedule”, or declare it in the settings file."));
      return;
    }
    const headers = ["Schedule", "When", "Next fire", "Last run", "State"];
    if (session.canOperate) headers.push("");
    clear(box, h("div.table-scroll", table(headers, schedules.map(row))));
  });

  function row(s) {
    const last = s.last_run;
    const cells = [
      h("td", h("strong", s.id), s.name ? h("div.muted.small", s.name) : null,
        h("div.small", h("code", s.task_type), " · ", h("a.inline-link", { href: `#/tasks?schedule_id=${encodeURIComponent(s.id)}` }, "tasks"))),
      h("td", h("span.when", s.description), h("div.muted.small", s.timezone, s.managed_by ? ` · ${s.origin}` : "")),
      h("td.nowrap", s.paused || !s.next_run_at ? h("span.muted", s.paused ? "paused" : "none") : h("span", { title: fmtTime(s.next_run_at) }, timeCell(s.next_run_at))),
      h("td.nowrap", last ? [badge(last.status), h("div.small", timeCell(last.scheduled_for))] : "never",
        s.last_error ? h("div.small.error-text", { title: s.last_error }, "last fire failed") : null),
      h("td", s.paused ? badge("cancelled", "paused") : badge("completed", "active"),
        s.paused && s.pause_note ? h("div.muted.small.note", s.pause_note) : null),
    ];
    if (session.canOperate) cells.push(h("td.row-actions", actions(s)));
    return h("tr", { dataset: { id: s.id } }, cells);
  }

  function button(label, action, s, handler, ghost = true) {
    return h(`button.btn.small${ghost ? ".ghost" : ""}`, { type: "button", dataset: { action }, on: { click: (e) => handler(e.currentTarget, s) } }, label);
  }

  function actions(s) {
    const own = s.managed_by === null;
    const byHand = mayEnqueue(s.task_type);
    return [
      byHand ? button("Run now", "run", s, run, false) : null,
      s.paused ? button("Resume", "resume", s, resume) : button("Pause", "pause", s, pause),
      byHand ? button("Backfill", "backfill", s, backfill) : null,
      session.isAdmin && own ? button("Edit", "edit", s, (_, x) => openForm(x)) : null,
      session.isAdmin && own ? button("Delete", "delete", s, remove) : null,
    ];
  }

  async function run(el, s) {
    if (!(await confirmAction(`Run ${s.id} now?`, `A ${s.task_type} task is enqueued at once.`, "Run now"))) return;
    await act(el, async () => {
      const task = await api("POST", path(s.id, "run"));
      toast(`${s.id}: task ${task.reference || task.id} enqueued`, "success");
      await reload();
    });
  }

  async function pause(el, s) {
    const values = await ask(`Pause ${s.id}?`, "It will not fire on any daemon until resumed.", "Pause",
      [{ name: "note", label: "Note (why; shown here)", tag: "textarea" }]);
    if (!values) return;
    await act(el, async () => {
      await api("POST", path(s.id, "pause"), { body: values.note ? { note: values.note } : {} });
      toast(`${s.id} paused`);
      await reload();
    });
  }

  async function resume(el, s) {
    await act(el, async () => {
      await api("POST", path(s.id, "resume"));
      toast(`${s.id} resumed`);
      await reload();
    });
  }

  async function backfill(el, s) {
    const values = await ask(`Backfill ${s.id}`, "Every fire in the range (UTC) without a task gets one, under the overlap policy.", "Backfill", [
      { name: "start", label: "From (UTC)", type: "datetime-local" },
      { name: "end", label: "To (UTC)", type: "datetime-local" },
    ]);
    if (!values) return;
    await act(el, async () => {
      const utc = (v) => (v.length === 16 ? `${v}:00Z` : `${v}Z`); // datetime-local: no zone
      const body = { start: utc(values.start), end: utc(values.end) };
      const answer = await api("POST", path(s.id, "backfill"), { body });
      toast(`${s.id}: ${answer.tasks.length} task(s) enqueued`, "success");
      await reload();
    });
  }

  async function remove(el, s) {
    if (!(await confirmAction(`Delete ${s.id}?`, "It stops firing on every daemon; its tasks stay.", "Delete"))) return;
    await act(el, async () => {
      await api("DELETE", path(s.id));
      toast(`${s.id} deleted`);
      await reload();
    });
  }

  // ---- the form ------------------------------------------------------------------------------

  function openForm(existing) {
    clear(formBox, scheduleForm(existing, async () => {
      clear(formBox);
      await reload();
    }, () => clear(formBox)));
    formBox.querySelector("input, select")?.focus();
  }

  reload();
  const timer = setInterval(reload, 10000);
  return () => clearInterval(timer);
}

/** A small modal form; resolves the values, or null when cancelled. */
function ask(title, text, okLabel, fields) {
  const inputs = fields.map((f) => h(f.tag || "input", { name: f.name, type: f.tag ? undefined : (f.type || "text"), required: f.type === "datetime-local" }));
  const form = h("form", { method: "dialog" },
    h("h2", title), h("p", text),
    fields.map((f, i) => h("label.field", h("span", f.label), inputs[i])),
    h("div.dialog-actions",
      h("button.btn.ghost", { type: "button", value: "cancel", on: { click: () => dialog.close("cancel") } }, "Cancel"),
      h("button.btn", { type: "submit", value: "ok", dataset: { action: "ok" } }, okLabel)));
  const dialog = h("dialog.dialog.ask", { "aria-label": title }, form);
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const values = Object.fromEntries(fields.map((f, i) => [f.name, inputs[i].value.trim()]));
      resolve(dialog.returnValue === "ok" ? values : null);
      dialog.remove();
    }, { once: true });
    dialog.showModal();
  });
}

function scheduleForm(existing, done, cancel) {
  const s = existing || {};
  const trig = s.trigger || { cron: "*/15 * * * *" };
  const kind = "cron" in trig ? "cron" : "every_s" in trig ? "every_s" : "at";
  const field = (label, input, hint) => h("label.field", h("span", label), input, hint ? h("small.muted", hint) : null);
  const input = (name, value, props = {}) => h("input", { name, value: value ?? "", ...props });
  const select = (name, options, value) => h("select", { name }, options.map((o) => h("option", { value: o, selected: o === value }, o)));

  const inputs = {
    id: input("id", s.id, { required: true, pattern: "[a-z0-9][a-z0-9_.\\-]*", disabled: Boolean(existing), placeholder: "erp-parts-incremental" }),
    name: input("name", s.name),
    task_type: input("task_type", s.task_type || "noop", { required: true }),
    kind: select("kind", ["cron", "every_s", "at"], kind),
    trigger: input("trigger", kind === "at" ? trig.at : trig[kind], { required: true, "aria-describedby": "schedule-preview" }),
    timezone: input("timezone", s.timezone, { placeholder: "the daemon's (e.g. Europe/Moscow)" }),
    parameters: h("textarea", { name: "parameters", rows: 3 }, JSON.stringify(s.parameters || {})),
    data_source_id: input("data_source_id", s.data_source_id),
    priority: input("priority", s.priority, { type: "number", min: -100, max: 100 }),
    overlap: select("overlap", OVERLAP, s.overlap || "skip"),
    catch_up: select("catch_up", CATCH_UP, s.catch_up || "latest"),
    catch_up_window_s: input("catch_up_window_s", s.catch_up_window_s, { type: "number", min: 1 }),
    jitter_s: input("jitter_s", s.jitter_s || "", { type: "number", min: 0 }),
  };
  const preview = h("div.preview#schedule-preview", { "aria-live": "polite" });
  const problems = h("div.form-error", { role: "alert" });

  function trigger() {
    const k = inputs.kind.value;
    const v = inputs.trigger.value.trim();
    return { [k]: k === "every_s" ? Number(v) : v };
  }

  let pending = null;
  const check = async () => {
    pending = null;
    const body = { trigger: trigger() };
    if (inputs.timezone.value.trim()) body.timezone = inputs.timezone.value.trim();
    try {
      const answer = await api("POST", "/api/schedule-preview", { body });
      inputs.trigger.setCustomValidity("");
      clear(preview, h("strong.when", answer.description), h("span.muted", ` (${answer.timezone})`),
        h("ol.fires", answer.next_fires.map((f) => h("li", h("time", { datetime: f.utc }, f.local.replace("T", " "))))));
      preview.dataset.state = "ok";
    } catch (error) {
      const first = (error.details || [])[0];
      const message = first ? `${first.field}: ${first.message}` : error.message;
      inputs.trigger.setCustomValidity(message);
      clear(preview, h("span.error-text", message));
      preview.dataset.state = "error";
    }
  };
  const later = () => {
    clearTimeout(pending);
    pending = setTimeout(check, 250);
  };
  for (const name of ["kind", "trigger", "timezone"]) inputs[name].addEventListener("input", later);

  async function submit(event) {
    event.preventDefault();
    clear(problems);
    let parameters;
    try {
      parameters = JSON.parse(inputs.parameters.value || "{}");
    } catch (error) {
      clear(problems, `parameters: not valid JSON (${error.message})`);
      return;
    }
    const body = { task_type: inputs.task_type.value.trim(), trigger: trigger(), parameters, overlap: inputs.overlap.value, catch_up: inputs.catch_up.value };
    for (const name of ["name", "timezone", "data_source_id"]) if (inputs[name].value.trim()) body[name] = inputs[name].value.trim();
    for (const name of ["priority", "catch_up_window_s", "jitter_s"]) if (inputs[name].value !== "") body[name] = Number(inputs[name].value);
    const button = event.submitter;
    await act(button, async () => {
      try {
        if (existing) await api("PUT", `/api/schedules/${encodeURIComponent(existing.id)}`, { body });
        else await api("POST", "/api/schedules", { body: { id: inputs.id.value.trim(), ...body } });
      } catch (error) {
        const details = (error.details || []).map((d) => `${d.field}: ${d.message}`);
        clear(problems, details.length ? details.join("; ") : error.message);
        return;
      }
      toast(`${existing ? existing.id : inputs.id.value.trim()} saved`, "success");
      await done();
    });
  }

  const form = h("form.card.schedule-form", { on: { submit }, "aria-label": existing ? `Edit ${existing.id}` : "New schedule" },
    h("h2", existing ? `Edit ${existing.id}` : "New schedule"),
    h("div.form-grid",
      field("Id", inputs.id), field("Name", inputs.name), field("Task type", inputs.task_type),
      field("Trigger", inputs.kind, "cron (5 fields), every_s (seconds) or at (ISO time)"), field("Value", inputs.trigger),
      field("Time zone", inputs.timezone), field("Parameters (JSON)", inputs.parameters),
      field("Data source", inputs.data_source_id), field("Priority", inputs.priority),
      field("Overlap", inputs.overlap), field("Catch-up", inputs.catch_up),
      field("Catch-up window (s)", inputs.catch_up_window_s), field("Jitter (s)", inputs.jitter_s)),
    preview, problems,
    h("div.dialog-actions",
      h("button.btn.ghost", { type: "button", on: { click: cancel } }, "Cancel"),
      h("button.btn", { type: "submit", dataset: { action: "save" } }, "Save")));
  check();
  return form;
}
