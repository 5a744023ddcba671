// Partnumber books (seed 000): the list with item counts and the active one marked, "create
// snapshot" with live progress, and a paged view of one book's items.

import { api, session } from "../api.js";
import { live } from "../live.js";
import {
  act, badge, clear, empty, errorBox, fmtNumber, h, loading, pageHeader, pager, progressBar,
  serialized, setProgress, stateText, table, timeCell, toast, updateBar,
} from "../ui.js";

const BOOKS = "/api/admin/pricing/partnumber-books";
const FINISHED = new Set(["completed", "failed", "cancelled"]);

export function render(ctx) {
  return ctx.params.length ? renderItems(ctx) : renderList(ctx);
}

function renderList({ root }) {
  const box = h("div.card.flush", loading());
  const progressBox = h("div#snapshot-progress");
  const button = session.canOperate
    ? h("button.btn.primary#create-snapshot", { type: "button", on: { click: () => createSnapshot() } }, "Create snapshot")
    : null;
  clear(root, pageHeader("Partnumber books", "Snapshots of the vendor partnumber → lot mapping read by QuoteForge.", button), progressBox, box);
  let following = null; // {task, bar, text}

  const reload = serialized(async () => {
    let answer;
    try {
      answer = await api("GET", BOOKS);
    } catch (error) {
      clear(box, errorBox(error, "Could not load the partnumber books"));
      return;
    }
    const books = Array.isArray(answer) ? answer : answer.books || answer.items || [];
    if (!books.length) {
      clear(box, empty("No partnumber books yet", "Create a snapshot to publish the first one."));
      return;
    }
    clear(box, table(["Version", "State", "Items", "Created", "Task", ""], books.map((b) =>
      h("tr", { dataset: { version: b.version } },
        h("td", h("strong", b.version)),
        h("td", b.is_active ? badge("completed", "active") : h("span.muted", "archived")),
        h("td.num", fmtNumber(b.item_count)),
        h("td.nowrap", timeCell(b.created_at)),
        h("td", b.task_id ? h("a", { href: `#/task/${b.task_id}` }, "task") : "—"),
        h("td.row-actions", h("a.btn.small.ghost", { href: `#/books/${encodeURIComponent(b.version)}` }, "Browse items"))))));
  });

  async function createSnapshot() {
    await act(button, async () => {
      const answer = await api("POST", BOOKS);
      const task = await api("GET", `/api/sync/tasks/${answer.task_id}`);
      toast(task.status === "pending" ? `Snapshot ${task.reference} queued` : `Snapshot ${task.reference} ${task.status}`);
      follow(task);
    });
  }

  function follow(task) {
    const bar = progressBar(task);
    const text = h("span", stateText(task));
    const status = h("span", badge(task.status));
    following = { task, bar, text, status };
    clear(progressBox, h("div.card.follow",
      h("div.follow-head", h("strong", "Snapshot "), h("a", { href: `#/task/${task.id}` }, task.reference), " ", status),
      bar, h("p.muted", text)));
    button && (button.disabled = true);
  }

  const pollFollowed = serialized(async () => {
    if (!following) return;
    try {
      update(await api("GET", `/api/sync/tasks/${following.task.id}`));
    } catch (error) {
      clear(progressBox, errorBox(error, "Lost track of the snapshot task"));
      following = null;
    }
  });

  function update(task) {
    if (!following || task.id !== following.task.id) return;
    following.task = task;
    updateBar(following.bar, task);
    following.text.textContent = stateText(task);
    clear(following.status, badge(task.status));
    if (FINISHED.has(task.status)) {
      following = null;
      if (button) button.disabled = false;
      toast(task.status === "completed" ? `Snapshot done: ${task.result && task.result.version ? task.result.version : task.reference}` : `Snapshot ${task.status}: ${task.error || ""}`,
        task.status === "completed" ? "success" : "error");
      reload();
    }
  }

  const unsubscribe = live.subscribe((events) => {
    if (!following) return;
    for (const event of events) {
      if (event.id !== following.task.id) continue;
      if (event.event === "progress") {
        setProgress(following.bar, event.progress);
        following.text.textContent = event.message || "";
      } else if (event.task) {
        update(event.task);
      }
    }
  });
  live.setPoller(async () => {
    await pollFollowed();
    await reload();
  });
  // The socket may miss nothing, but a finished event can race the first GET: poll the
  // followed task at a slow pace too.
  const timer = setInterval(pollFollowed, 2000);
  reload();
  return () => {
    unsubscribe();
    clearInterval(timer);
  };
}

function renderItems({ root, params, query, go }) {
  const version = params[0];
  const page = Math.max(1, Math.round(Number(query.page)) || 1);
  const partnumber = (query.partnumber || "").trim().slice(0, 255);
  const box = h("div.card.flush", loading());
  const input = h("input#pn-search", { type: "search", name: "partnumber", value: partnumber, maxlength: 255, placeholder: "e.g. P12345-B21" });
  const search = h("form.search-form", {
    role: "search",
    on: { submit: (e) => { e.preventDefault(); go(`/books/${version}`, { partnumber: input.value.trim() }); } },
  },
  h("label", "Partnumber (exact)", input),
  h("button.btn.primary", { type: "submit" }, "Search"),
  partnumber ? h("button.btn.ghost", { type: "button", on: { click: () => go(`/books/${version}`) } }, "Show all") : null);
  clear(root, h("a.back", { href: "#/books" }, "‹ All partnumber books"), pageHeader(version, "Items of this partnumber book."), search, box);
  (async () => {
    let answer;
    try {
      answer = await api("GET", `${BOOKS}/${encodeURIComponent(version)}/items`, { query: { page, size: 50, partnumber } });
    } catch (error) {
      clear(box, errorBox(error, `Could not load the items of ${version}`));
      return;
    }
    const items = answer.items || [];
    if (!items.length) {
      clear(box, partnumber ? empty(`No item with partnumber ${partnumber}`, "The search is exact (the whole partnumber).") : empty("This book has no items"));
      return;
    }
    clear(box,
      table(["Partnumber", "Vendor", "Lot", "Qty", "Primary", "Description"], items.map((i) =>
        h("tr",
          h("td", h("code", i.partnumber)),
          h("td", i.vendor || "—"),
          h("td", i.lot_name),
          h("td.num", i.qty),
          h("td", i.is_primary_pn ? "yes" : "no"),
          h("td.message", i.description || "")))),
      answer.pagination ? pager(answer.pagination, (p) => go(`/books/${version}`, { page: p, partnumber })) : null);
  })();
  return null;
}
