"""The `syncd` API client commands: `tasks ...`, `import stock FILE`, `snapshot create`
(and `schedules ...`, in `controllers.schedule_commands`).

They talk to a running daemon over HTTP (stdlib urllib: a command-line tool has no event loop
to share) and need no daemon settings: only `--url`/`SYNCD_URL` and `--token`/`SYNCD_TOKEN`.
Exit codes: 0 done; 1 the API answered an error or could not be reached; 2 bad usage;
3 a followed task ended `failed` or `cancelled`.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode
from urllib.request import Request, urlopen

DEFAULT_URL = "http://127.0.0.1:8080"
FINISHED = ("completed", "failed", "cancelled")
EXIT_API_ERROR = 1
EXIT_TASK_FAILED = 3
CHUNK = 1 << 16


class ClientError(Exception):
    """The API answered an error, or could not be reached; the message is one line."""


@dataclass
class ApiClient:
    """A minimal JSON client of the syncd API."""

    base_url: str
    token: str | None = None
    timeout: float = 30.0

    def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """Send a request and return the decoded JSON answer (None for an empty one)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        return self._send(method, self._url(path, query), data, headers)

    def upload(self, path: str, field: str, file: Path) -> Any:
        """POST one file as `multipart/form-data`, streamed from disk."""
        boundary = f"syncd-{uuid.uuid4().hex}"
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{file.name}"\r\n'
            f"Content-Type: {kind}\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        try:
            size = file.stat().st_size
        except OSError as exc:
            raise ClientError(f"cannot read {file}: {exc.strerror}") from None
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail)),
        }
        return self._send("POST", self._url(path, None), _multipart(head, file, tail), headers)

    def _url(self, path: str, query: dict[str, Any] | None) -> str:
        url = self.base_url.rstrip("/") + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        return f"{url}?{urlencode(params)}" if params else url

    def _send(self, method: str, url: str, data: Any, headers: dict[str, str]) -> Any:
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers["Accept"] = "application/json"
        request = Request(url, data=data, headers=headers, method=method)
        try:
            with urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except HTTPError as exc:
            raise ClientError(_describe_http_error(exc)) from None
        except URLError as exc:
            raise ClientError(f"cannot reach {self.base_url}: {exc.reason}") from None
        except (TimeoutError, ConnectionError) as exc:
            raise ClientError(f"cannot reach {self.base_url}: {exc}") from None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ClientError(f"{method} {url}: the answer is not JSON") from None


def _multipart(head: bytes, file: Path, tail: bytes) -> Iterator[bytes]:
    yield head
    with file.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk
    yield tail


def _describe_http_error(exc: HTTPError) -> str:
    """`HTTP 409 invalid_state: task is already completed` from the API's error JSON."""
    with exc:
        raw = exc.read()
    try:
        error = json.loads(raw)["error"]
        return f"HTTP {exc.code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        text = raw.decode(errors="replace").strip().splitlines()
        return f"HTTP {exc.code}: {text[0] if text else exc.reason}"


# ---- argument parsing -------------------------------------------------------------------------


def add_client_commands(sub: Any) -> None:
    """Add `tasks`, `import` and `snapshot` to the `syncd` sub-command parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None, help=f"daemon URL (SYNCD_URL, {DEFAULT_URL})")
    common.add_argument("--token", default=None, help="API token (SYNCD_TOKEN)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    follow = argparse.ArgumentParser(add_help=False)
    follow.add_argument(
        "--follow", "-f", action="store_true", help="draw the task's progress until it ends"
    )

    tasks = sub.add_parser("tasks", help="list, inspect and steer tasks").add_subparsers(
        dest="action", required=True
    )
    listing = tasks.add_parser("list", parents=[common], help="list tasks, newest first")
    listing.add_argument("--status", choices=["pending", "running", *FINISHED])
    listing.add_argument("--type", dest="task_type")
    listing.add_argument("--data-source", dest="data_source_id")
    listing.add_argument("--schedule", dest="schedule_id", help="only this schedule's tasks")
    listing.add_argument("--page", type=int, default=1)
    listing.add_argument("--size", type=int, default=20)
    listing.set_defaults(run=_tasks_list)

    show = tasks.add_parser("show", parents=[common, follow], help="one task in detail")
    show.add_argument("id", help="task id or reference")
    show.set_defaults(run=_tasks_show)

    create = tasks.add_parser("create", parents=[common, follow], help="create a task")
    create.add_argument("task_type")
    create.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter (VALUE is read as JSON when it parses, else as text)",
    )
    create.add_argument("--params", help="all parameters as a JSON object")
    create.add_argument("--priority", type=int)
    create.add_argument("--data-source", dest="data_source_id")
    create.add_argument("--interface", dest="interface_id")
    create.add_argument("--max-attempts", type=int)
    create.add_argument("--timeout", dest="timeout_s", type=float)
    create.add_argument("--run-after", help="ISO 8601 time with a zone")
    create.add_argument("--dedupe-key")
    create.set_defaults(run=_tasks_create)

    cancel = tasks.add_parser("cancel", parents=[common], help="cancel tasks")
    cancel.add_argument("ids", nargs="+", metavar="id")
    cancel.set_defaults(run=_tasks_cancel)

    retry = tasks.add_parser("retry", parents=[common, follow], help="retry a failed task")
    retry.add_argument("id")
    retry.set_defaults(run=_tasks_retry)

    stats = tasks.add_parser("stats", parents=[common], help="counts by status and type")
    stats.add_argument("--since", help="ISO 8601 time (default: 7 days ago)")
    stats.set_defaults(run=_tasks_stats)

    imports = sub.add_parser("import", help="upload data to import").add_subparsers(
        dest="action", required=True
    )
    stock = imports.add_parser("stock", parents=[common, follow], help="import a stock .xlsx")
    stock.add_argument("file", type=Path)
    stock.set_defaults(run=_import_stock)

    snapshot = sub.add_parser("snapshot", help="partnumber-book snapshots").add_subparsers(
        dest="action", required=True
    )
    make = snapshot.add_parser("create", parents=[common, follow], help="create a snapshot now")
    make.set_defaults(run=_snapshot_create)

    from controllers.schedule_commands import add_schedule_commands  # it imports this module

    add_schedule_commands(sub, common, follow)


def run_client(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run a client command; API errors become one line on stderr and exit code 1."""
    stream = out or sys.stdout
    client = ApiClient(
        base_url=args.url or os.environ.get("SYNCD_URL") or DEFAULT_URL,
        token=args.token or os.environ.get("SYNCD_TOKEN") or None,
    )
    try:
        code: int = args.run(client, args, stream)
        return code
    except ClientError as exc:
        print(f"syncd: error: {exc}", file=sys.stderr)
        return EXIT_API_ERROR
    except KeyboardInterrupt:
        stream.write("\n")
        return 130


# ---- commands ---------------------------------------------------------------------------------


def _tasks_list(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    query = {
        "status": args.status,
        "task_type": args.task_type,
        "data_source_id": args.data_source_id,
        "schedule_id": args.schedule_id,
        "page": args.page,
        "size": args.size,
    }
    answer = client.call("GET", "/api/sync/tasks", query=query)
    if args.json:
        _print_json(answer, out)
        return 0
    rows = [
        [
            t["reference"],
            t["task_type"],
            t["status"],
            f"{t['progress']:>3}%",
            f"{t['attempt']}/{t['max_attempts']}",
            _short_time(t["created_at"]),
            t["error"] or t["message"],
        ]
        for t in answer["tasks"]
    ]
    if not rows:
        out.write("no tasks\n")
    else:
        headers = ["REFERENCE", "TYPE", "STATUS", "PROGRESS", "ATTEMPT", "CREATED", "MESSAGE"]
        out.write(table(headers, rows))
    page = answer["pagination"]
    out.write(f"page {page['page']} of {max(1, page['total_pages'])}, {page['total']} task(s)\n")
    return 0


def _tasks_show(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    task = client.call("GET", f"/api/sync/tasks/{_q(args.id)}")
    if args.follow:
        return _follow(client, task, args, out)
    if args.json:
        _print_json(task, out)
        return 0
    out.write(describe_task(task))
    return 0


def _tasks_create(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {"task_type": args.task_type, "parameters": _parameters(args)}
    for name in ("priority", "data_source_id", "interface_id", "max_attempts", "timeout_s"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.run_after:
        body["run_after"] = args.run_after
    if args.dedupe_key:
        body["dedupe_key"] = args.dedupe_key
    task = client.call("POST", "/api/sync/tasks", body=body)
    return _created(client, task, args, out, "created")


def _tasks_cancel(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    if len(args.ids) == 1:
        task = client.call("POST", f"/api/sync/tasks/{_q(args.ids[0])}/cancel")
        if args.json:
            _print_json(task, out)
        elif task["status"] == "cancelled":
            out.write(f"cancelled {task['reference']}\n")
        else:
            out.write(f"cancel requested for {task['reference']} (it is {task['status']})\n")
        return 0
    answer = client.call("POST", "/api/sync/tasks/batch/cancel", body={"ids": args.ids})
    if args.json:
        _print_json(answer, out)
    else:
        rows = [
            [r["id"], "ok" if r["ok"] else "refused", r.get("status") or r.get("error") or ""]
            for r in answer["results"]
        ]
        out.write(table(["ID", "RESULT", "STATUS OR ERROR"], rows))
    return 0 if all(r["ok"] for r in answer["results"]) else EXIT_API_ERROR


def _tasks_retry(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    task = client.call("POST", f"/api/sync/tasks/{_q(args.id)}/retry")
    return _created(client, task, args, out, f"retry of {args.id} created as")


def _tasks_stats(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("GET", "/api/sync/tasks/statistics", query={"since": args.since})
    if args.json:
        _print_json(answer, out)
        return 0
    db, engine = answer["database"], answer["engine"]
    rate = db["success_rate"]
    avg = db["avg_duration_s"]
    out.write(f"since {db['since']}: {db['total']} task(s)\n")
    out.write(f"success rate: {'-' if rate is None else f'{rate * 100:.1f}%'}")
    out.write(f"   mean duration: {'-' if avg is None else f'{avg:.2f} s'}\n\n")
    out.write(table(["STATUS", "COUNT"], [[k, str(v)] for k, v in db["by_status"].items()]))
    out.write("\n")
    by_type = sorted(db["by_type"].items(), key=lambda kv: -kv[1])
    out.write(table(["TYPE", "COUNT"], [[k, str(v)] for k, v in by_type] or [["-", "0"]]))
    out.write(
        f"\nnode {engine['node_id']}: {engine['running_tasks']}/{engine['max_concurrent']} "
        f"running, {engine['queue_length']} queued, up {engine['uptime_s']:.0f} s\n"
    )
    return 0


def _import_stock(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    if not args.file.is_file():
        raise ClientError(f"no such file: {args.file}")
    task = client.upload("/api/imports/stock", "file", args.file)
    return _created(client, task, args, out, "stock import")


def _snapshot_create(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("POST", "/api/admin/pricing/partnumber-books")
    task_id = answer.get("task_id") if isinstance(answer, dict) else None
    if not task_id:
        raise ClientError("the API did not answer with a task_id")
    task = client.call("GET", f"/api/sync/tasks/{_q(task_id)}")
    return _created(client, task, args, out, "snapshot")


def _created(
    client: ApiClient, task: dict[str, Any], args: argparse.Namespace, out: TextIO, what: str
) -> int:
    if args.follow:
        return _follow(client, task, args, out)
    if args.json:
        _print_json(task, out)
    else:
        out.write(f"{what} {task['reference']} ({task['task_type']}, id {task['id']})\n")
    return 0


# ---- following a task -------------------------------------------------------------------------


def _follow(client: ApiClient, task: dict[str, Any], args: argparse.Namespace, out: TextIO) -> int:
    """Poll the task every 0.5 s until it ends: a bar redrawn in place on a terminal, a line
    per change otherwise, a JSON line per change with `--json`."""
    tty = out.isatty() and not args.json
    last = ""
    while True:
        line = json.dumps(task) if args.json else progress_line(task, _width(tty))
        if tty:
            out.write("\r\x1b[2K" + line)
        elif line != last:
            out.write(line + "\n")
        out.flush()
        last = line
        if task["status"] in FINISHED:
            break
        time.sleep(0.5)
        task = client.call("GET", f"/api/sync/tasks/{_q(task['id'])}")
    if tty:
        out.write("\n")
    if task["status"] != "completed" and not args.json:
        out.write(f"{task['reference']} {task['status']}: {task['error'] or task['message']}\n")
    return 0 if task["status"] == "completed" else EXIT_TASK_FAILED


def progress_line(task: dict[str, Any], width: int = 100) -> str:
    """`HD6EKSD8DO9 noop running [########------------]  40% step 4/10 (4/10 rows)`."""
    percent = max(0, min(100, int(task["progress"])))
    bar_width = 24
    filled = round(bar_width * percent / 100)
    bar = "#" * filled + "-" * (bar_width - filled)
    rows = ""
    if task.get("total_rows"):
        rows = f" ({task['processed_rows']}/{task['total_rows']} rows)"
    text = task.get("error") if task["status"] == "failed" else task.get("message")
    head = f"{task['reference']} {task['task_type']} {task['status']:<9} [{bar}] {percent:>3}%"
    line = f"{head} {text or ''}{rows}".rstrip()
    return line if len(line) <= width else line[: max(10, width - 1)] + "…"


def _width(tty: bool) -> int:
    return shutil.get_terminal_size((100, 20)).columns - 1 if tty else 200


# ---- formatting -------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], max_width: int = 60) -> str:
    """A plain text table with aligned columns; long cells are cut with an ellipsis."""
    cells = [[_cell(c, max_width) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def describe_task(task: dict[str, Any]) -> str:
    """A human summary of one task with its attempts."""
    fields = [
        ("reference", task["reference"]),
        ("id", task["id"]),
        ("type", task["task_type"]),
        ("status", task["status"] + (" (cancel requested)" if task["cancel_requested"] else "")),
        ("progress", progress_line(task).split("] ", 1)[-1]),
        ("priority", task["priority"]),
        ("data source", task["data_source_id"] or "-"),
        ("attempt", f"{task['attempt']} of {task['max_attempts']}"),
        ("record errors", task["error_count"]),
        ("retry of", task["retry_of"] or "-"),
        ("created", task["created_at"]),
        ("started", task["started_at"] or "-"),
        ("finished", task["finished_at"] or "-"),
        ("error", task["error"] or "-"),
    ]
    text = "".join(f"{name + ':':<15}{value}\n" for name, value in fields)
    text += "parameters:    " + json.dumps(task["parameters"], ensure_ascii=False) + "\n"
    if task["result"] is not None:
        text += "result:        " + json.dumps(task["result"], ensure_ascii=False) + "\n"
    attempts = task.get("attempts") or []
    if attempts:
        rows = [
            [
                str(a["attempt"]),
                a["node_id"],
                _short_time(a["started_at"]),
                a["outcome"] or "running",
                a["error"] or "",
            ]
            for a in attempts
        ]
        text += "\n" + table(["ATTEMPT", "NODE", "STARTED", "OUTCOME", "ERROR"], rows)
    return text


def _cell(value: Any, max_width: int) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def _short_time(value: str | None) -> str:
    """`2026-01-01T12:00:00.000Z` as `2026-01-01 12:00:00`."""
    return value.replace("T", " ")[:19] if value else "-"


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.params:
        try:
            loaded = json.loads(args.params)
        except ValueError as exc:
            raise ClientError(f"--params is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ClientError("--params must be a JSON object")
        params.update(loaded)
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ClientError(f"--param {item!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def _print_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _q(key: str) -> str:
    return quote(key, safe="")
