// Data sources: the list, and (for admins) create, edit and delete as JSON definitions.

import { api, session } from "../api.js";
import { act, clear, confirmAction, empty, errorBox, h, loading, pageHeader, serialized, table, toast } from "../ui.js";

const PATH = "/api/sync/data-sources";
// A complete definition that the API accepts as it is: save it unchanged to try the page, then
// edit the URL (and the table or a `query`) to point at a real database.
const EXAMPLE = {
  id: "erp-lots",
  name: "ERP lot partnumbers",
  kind: "sql",
  connection: { url: "mysql+pymysql://reader:secret@erp.example/erp", table: "lot_partnumbers" },
  target_table: "lot_partnumbers",
  key_columns: ["vendor", "partnumber"],
};

export function render({ root }) {
  const box = h("div.card.flush", loading());
  const editor = h("div");
  const add = session.isAdmin
    ? h("button.btn.primary", { type: "button", on: { click: () => edit(null) } }, "New data source")
    : null;
  clear(root, pageHeader("Data sources", "Where full_sync and incremental_sync tasks read from.", add), editor, box);

  const reload = serialized(async () => {
    let answer;
    try {
      answer = await api("GET", PATH);
    } catch (error) {
      clear(box, errorBox(error, "Could not load the data sources"));
      return;
    }
    const sources = Array.isArray(answer) ? answer : answer.data_sources || answer.items || [];
    if (!sources.length) {
      clear(box, empty("No data sources", session.isAdmin ? "Add one with “New data source”." : "An admin can add them."));
      return;
    }
    const headers = ["Id", "Name", "Kind", "Target table", "Keys", "Watermark", ""];
    clear(box, table(headers, sources.map((s) =>
      h("tr", { dataset: { id: s.id } },
        h("td", h("code", s.id)),
        h("td", s.name || ""),
        h("td", h("span.chip", s.kind)),
        h("td", h("code", s.target_table || "—")),
        h("td", (s.key_columns || []).join(", ")),
        h("td", s.watermark_column || "—"),
        h("td.row-actions",
          h("a.btn.small.ghost", { href: `#/tasks?data_source_id=${encodeURIComponent(s.id)}` }, "Tasks"),
          session.isAdmin ? h("button.btn.small.ghost", { type: "button", on: { click: () => edit(s) } }, "Edit") : null,
          session.isAdmin ? h("button.btn.small.danger-ghost", { type: "button", on: { click: (e) => remove(e.currentTarget, s) } }, "Delete") : null)))));
  });

  function edit(source) {
    const text = h("textarea.code", { rows: 14, spellcheck: false, "aria-label": "Definition (JSON)" },
      JSON.stringify(source || EXAMPLE, null, 2));
    const problem = h("div");
    const form = h("form.card", {
      on: {
        submit: async (e) => {
          e.preventDefault();
          let body;
          try {
            body = JSON.parse(text.value);
          } catch (exc) {
            clear(problem, errorBox({ message: `Not valid JSON: ${exc.message}` }, "Check the definition"));
            return;
          }
          await act(e.submitter, async () => {
            try {
              if (source) {
                const { id, ...rest } = body;
                await api("PUT", `${PATH}/${encodeURIComponent(source.id)}`, { body: rest });
              } else {
                await api("POST", PATH, { body });
              }
            } catch (error) {
              clear(problem, errorBox(error, "The data source was not saved"));
              return;
            }
            toast(`Data source ${body.id || source.id} saved`, "success");
            clear(editor);
            await reload();
          });
        },
      },
    },
    h("h2", source ? `Edit ${source.id}` : "New data source"),
    h("p.muted", "The definition as JSON. Secrets in the connection are stored and never shown again."),
    text, problem,
    h("div.dialog-actions",
      h("button.btn.ghost", { type: "button", on: { click: () => clear(editor) } }, "Close"),
      h("button.btn.primary", { type: "submit" }, "Save")));
    clear(editor, form);
    text.focus();
  }

  async function remove(button, source) {
    if (!(await confirmAction(`Delete ${source.id}?`, "Tasks that name it will fail to start.", "Delete"))) return;
    await act(button, async () => {
      await api("DELETE", `${PATH}/${encodeURIComponent(source.id)}`);
      toast(`${source.id} deleted`);
      await reload();
    });
  }

  reload();
  return null;
}
