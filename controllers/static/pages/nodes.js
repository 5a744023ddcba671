// Nodes: the daemons sharing this database, with their version, start, last heartbeat, slots
// and the tasks each runs (GET /api/nodes), refreshed every 5 s.

import { api } from "../api.js";
import { badge, clear, empty, errorBox, h, loading, pageHeader, serialized, table, timeCell } from "../ui.js";

export function render({ root }) {
  const box = h("div.card.flush", loading());
  clear(root, pageHeader("Nodes", "The daemons sharing this database and what each runs."), box);

  const reload = serialized(async () => {
    let answer;
    try {
      answer = await api("GET", "/api/nodes");
    } catch (error) {
      clear(box, errorBox(error, "Could not load the nodes"));
      return;
    }
    if (!answer.nodes.length) {
      clear(box, empty("No node has written a heartbeat yet"));
      return;
    }
    const headers = ["Node", "State", "Version", "Started", "Last heartbeat", "Slots", "Running tasks"];
    clear(box, table(headers, answer.nodes.map(row)));
  });

  function row(node) {
    const state = node.alive ? badge("completed", "alive")
      : node.stopped_at ? badge("pending", "stopped") : badge("failed", "silent");
    const running = node.running_tasks.length
      ? h("span.running-list", node.running_tasks.map((t) =>
        h("span.nowrap", h("a.ref", { href: `#/task/${t.id}` }, t.reference), ` ${t.task_type} ${t.progress}%`, " ")))
      : h("span.muted", "none");
    return h("tr", { dataset: { node: node.node_id } },
      h("td", h("strong", node.node_id)),
      h("td", state, node.stopped_at ? h("div.muted.small", "stopped gracefully") : null),
      h("td", h("code", node.version)),
      h("td", timeCell(node.started_at)),
      h("td", timeCell(node.heartbeat_at)),
      h("td.num.plain", `${node.slots.busy} / ${node.slots.total} busy`),
      h("td", running));
  }

  reload();
  const timer = setInterval(reload, 5000);
  return () => clearInterval(timer);
}
