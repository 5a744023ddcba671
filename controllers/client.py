"""The `syncd` API client commands: `tasks ...`, `import stock FILE`, `snapshot create`
(and `schedules ...`, in `controllers.schedule_commands`).

They talk to a running daemon over HTTP (stdlib urllib: a command-line tool has no event loop
to share) and need no daemon settings: only `--url`/`SYNCD_URL` and `--token`/`SYNCD_TOKEN`.
Exit codes: 0 done; 1 the API answered an error or could not be reached; 2 bad usage;
3 a followed task ended `failed` or `cancelled`. Times are printed in the local time zone with
their UTC offset (`2026-03-01 13:12:03+03:00`), or in UTC with `--utc`.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode, urlsplit
from urllib.request import Request, urlopen

DEFAULT_URL = "http://127.0.0.1:8080"
FINISHED = ("completed", "failed", "cancelled")
EXIT_API_ERROR = 1
EXIT_TASK_FAILED = 3
CHUNK = 1 << 16


class ClientError(Exception):
    """The API answered an error, or could not be reached; the message is one line."""


def daemon_url(given: str) -> str:
    """The daemon's base URL from `--url`/`SYNCD_URL`: `localhost:8080` means
    `http://localhost:8080`; only http and https are spoken."""
    text = given.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"--url {given!r}: expected http://HOST:PORT or https://HOST:PORT")
    return text.rstrip("/")


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

    def upload(self, path: str, field: str, file: Path, query: dict[str, Any] | None = None) -> Any:
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
        return self._send("POST", self._url(path, query), _multipart(head, file, tail), headers)

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

STATUSES = ("pending", "running", *FINISHED)


def add_client_commands(sub: Any) -> None:
    """Add `tasks`, `import` and `snapshot` to the `syncd` sub-command parser. Every leaf
    parser is remembered as the `parser` default, so an unknown option is reported with that
    command's own usage (see `controllers.cli.main`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=None, help=f"daemon URL, http:// if not said (SYNCD_URL, {DEFAULT_URL})"
    )
    common.add_argument("--token", default=None, help="API token (SYNCD_TOKEN)")
    common.add_argument("--json", action="store_true", help="print the API's JSON, for scripts")
    common.add_argument(
        "--utc", action="store_true", help="print times in UTC (default: local time with offset)"
    )
    follow = argparse.ArgumentParser(add_help=False)
    follow.add_argument(
        "--follow", "-f", action="store_true", help="draw the task's progress until it ends"
    )
    priority = argparse.ArgumentParser(add_help=False)
    priority.add_argument(
        "--priority", type=int, metavar="N", help="-100..100, higher runs first (default 0)"
    )

    def leaf(group: Any, name: str, parents: list[argparse.ArgumentParser], **kw: Any) -> Any:
        parser = group.add_parser(name, parents=parents, **kw)
        parser.set_defaults(parser=parser)
        return parser

    tasks = sub.add_parser("tasks", help="list, inspect and steer tasks").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    listing = leaf(tasks, "list", [common], help="list tasks, newest first")
    listing.add_argument("--status", choices=STATUSES, help="only tasks with this status")
    listing.add_argument("--type", dest="task_type", metavar="TYPE", help="only this task type")
    listing.add_argument(
        "--data-source", dest="data_source_id", metavar="ID", help="only this data source's tasks"
    )
    listing.add_argument(
        "--schedule", dest="schedule_id", metavar="ID", help="only this schedule's tasks"
    )
    listing.add_argument(
        "--search",
        "-q",
        metavar="TEXT",
        help="tasks whose reference or id starts with TEXT, or whose dedupe key does",
    )
    place = listing.add_mutually_exclusive_group()
    place.add_argument(
        "--page",
        type=int,
        default=1,
        metavar="N",
        help="page number (from 1); numbers reach the counted pages only, --cursor goes deeper",
    )
    place.add_argument(
        "--cursor",
        metavar="C",
        help="the page after a place: the `next page` cursor a listing printed (any depth)",
    )
    place.add_argument(
        "--before",
        metavar="C",
        help="the page before a place: the `previous page` cursor a listing printed",
    )
    listing.add_argument(
        "--size", type=int, default=20, metavar="N", help="tasks per page, 1..500 (default 20)"
    )
    listing.set_defaults(run=_tasks_list)

    show = leaf(tasks, "show", [common, follow], help="one task in detail")
    show.add_argument("id", help="task id or reference")
    show.set_defaults(run=_tasks_show)

    create = leaf(tasks, "create", [common, follow, priority], help="create a task")
    create.add_argument("task_type", metavar="TYPE", help="task type, e.g. noop (see the README)")
    create.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter (VALUE is read as JSON when it parses, else as text)",
    )
    create.add_argument("--params", metavar="JSON", help="all parameters as a JSON object")
    create.add_argument(
        "--data-source", dest="data_source_id", metavar="ID", help="the data source to read"
    )
    create.add_argument(
        "--interface", dest="interface_id", metavar="NAME", help="the data source's interface"
    )
    create.add_argument(
        "--max-attempts", type=int, metavar="N", help="attempts before it fails, 1..20"
    )
    create.add_argument(
        "--timeout", dest="timeout_s", type=float, metavar="S", help="seconds one attempt may run"
    )
    create.add_argument("--run-after", metavar="ISO", help="not before this ISO 8601 time")
    create.add_argument(
        "--dedupe-key", metavar="KEY", help="answer the unfinished task holding KEY instead"
    )
    create.set_defaults(run=_tasks_create)

    cancel = leaf(tasks, "cancel", [common], help="cancel tasks")
    cancel.add_argument("ids", nargs="+", metavar="ID", help="task ids or references")
    cancel.set_defaults(run=_tasks_cancel)

    retry = leaf(tasks, "retry", [common, follow], help="retry a failed or cancelled task")
    retry.add_argument("id", help="task id or reference")
    retry.set_defaults(run=_tasks_retry)

    stats = leaf(tasks, "stats", [common], help="counts by status and type")
    stats.add_argument("--since", metavar="ISO", help="ISO 8601 time (default: 7 days ago)")
    stats.set_defaults(run=_tasks_stats)

    imports = sub.add_parser("import", help="upload data to import").add_subparsers(
        dest="action", required=True, metavar="KIND"
    )
    stock = leaf(imports, "stock", [common, follow, priority], help="import a stock .xlsx")
    stock.add_argument("file", type=Path, metavar="FILE", help="the .xlsx workbook to upload")
    stock.set_defaults(run=_import_stock)

    snapshot = sub.add_parser("snapshot", help="partnumber-book snapshots").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    make = leaf(snapshot, "create", [common, follow, priority], help="create a snapshot now")
    make.set_defaults(run=_snapshot_create)

    from controllers.schedule_commands import add_schedule_commands  # it imports this module

    add_schedule_commands(sub, common, follow)


def run_client(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run a client command; API errors become one line on stderr and exit code 1."""
    stream = out or sys.stdout
    try:
        client = ApiClient(
            base_url=daemon_url(args.url or os.environ.get("SYNCD_URL") or DEFAULT_URL),
            token=args.token or os.environ.get("SYNCD_TOKEN") or None,
        )
        code: int = args.run(client, args, stream)
        return code
    except ClientError as exc:
        print(f"syncd: error: {exc}", file=sys.stderr)
        return EXIT_API_ERROR
    except KeyboardInterrupt:
        stream.write("\n")
        return 130
    except BrokenPipeError:  # `syncd tasks list | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# ---- commands ---------------------------------------------------------------------------------


def _tasks_list(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    query = {
        "status": args.status,
        "task_type": args.task_type,
        "data_source_id": args.data_source_id,
        "schedule_id": args.schedule_id,
        "q": args.search,
        "size": args.size,
        "cursor": args.cursor,
        "before": args.before,
    }
    if args.cursor is None and args.before is None:
        query["page"] = args.page
    answer = client.call("GET", "/api/sync/tasks", query=query)
    if args.json:
        print_json(answer, out)
        return 0
    clock = Times(args.utc)
    rows = [
        [
            t["reference"],
            t["task_type"],
            t["status"],
            f"{shown_progress(t):>3}%",
            f"{t['attempt']}/{t['max_attempts']}",
            clock.format(t["created_at"]),
            state_text(t, clock),
        ]
        for t in answer["tasks"]
    ]
    if not rows:
        out.write("no tasks\n")
    else:
        headers = ["REFERENCE", "TYPE", "STATUS", "PROGRESS", "ATTEMPT", "CREATED", "MESSAGE"]
        out.write(table(headers, rows, max_width=_message_width(rows)))
    out.write(
        _list_footer(answer["pagination"], by_number=args.cursor is None and args.before is None)
    )
    return 0


def _list_footer(page: dict[str, Any], by_number: bool) -> str:
    """Where this page is in the list, how many tasks match, and the cursors of the pages
    beside it (for `--cursor` and `--before`)."""
    more = "" if page["total_exact"] else "more than "
    pages = max(1, page["total_pages"])
    where = f"page {page['page']} of {more}{pages}" if by_number else "page by cursor"
    lines = [f"{where}, {more}{page['total']} task(s)"]
    if page["prev_cursor"]:
        lines.append(f"previous page: --before {page['prev_cursor']}")
    if page["next_cursor"]:
        lines.append(f"next page: --cursor {page['next_cursor']}")
    return "".join(line + "\n" for line in lines)


def _tasks_show(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    return show_task(client, client.call("GET", f"/api/sync/tasks/{quoted(args.id)}"), args, out)


def show_task(
    client: ApiClient, task: dict[str, Any], args: argparse.Namespace, out: TextIO
) -> int:
    """Print `task` as `--json`, `--follow` (until it ends) or `--utc` ask."""
    if args.follow:
        return follow_task(client, task, args, out)
    if args.json:
        print_json(task, out)
        return 0
    out.write(describe_task(task, Times(args.utc)))
    return 0


def _tasks_create(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {"task_type": args.task_type, "parameters": task_parameters(args)}
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
    """One line per task, worded alike for one id and for several: `cancelled X`,
    `cancel requested for X (it is running)`, or `X: refused: why` (exit 1 if any was)."""
    if len(args.ids) == 1:
        task = client.call("POST", f"/api/sync/tasks/{quoted(args.ids[0])}/cancel")
        if args.json:
            print_json(task, out)
        else:
            out.write(cancel_line(task["reference"], task["status"]))
        return 0
    answer = client.call("POST", "/api/sync/tasks/batch/cancel", body={"ids": args.ids})
    if args.json:
        print_json(answer, out)
    else:
        for result in answer["results"]:
            if result["ok"]:
                out.write(cancel_line(result["id"], result["status"]))
            else:
                out.write(f"{result['id']}: refused: {result['error']}\n")
    return 0 if all(r["ok"] for r in answer["results"]) else EXIT_API_ERROR


def cancel_line(name: str, status: str) -> str:
    """What a cancel did to one task, by the status it answered with."""
    if status == "cancelled":
        return f"cancelled {name}\n"
    return f"cancel requested for {name} (it is {status})\n"


def _tasks_retry(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    task = client.call("POST", f"/api/sync/tasks/{quoted(args.id)}/retry")
    return _created(client, task, args, out, f"retry of {args.id} created as")


def _tasks_stats(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("GET", "/api/sync/tasks/statistics", query={"since": args.since})
    if args.json:
        print_json(answer, out)
        return 0
    db, engine = answer["database"], answer["engine"]
    rate = db["success_rate"]
    avg = db["avg_duration_s"]
    out.write(f"since {Times(args.utc).format(db['since'])}: {db['total']} task(s)\n")
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
    query = None if args.priority is None else {"priority": args.priority}
    task = client.upload("/api/imports/stock", "file", args.file, query=query)
    return _created(client, task, args, out, "stock import")


def _snapshot_create(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    body = None if args.priority is None else {"priority": args.priority}
    answer = client.call("POST", "/api/admin/pricing/partnumber-books", body=body)
    task_id = answer.get("task_id") if isinstance(answer, dict) else None
    if not task_id:
        raise ClientError("the API did not answer with a task_id")
    task = client.call("GET", f"/api/sync/tasks/{quoted(task_id)}")
    return _created(client, task, args, out, "snapshot")


def _created(
    client: ApiClient, task: dict[str, Any], args: argparse.Namespace, out: TextIO, what: str
) -> int:
    if args.follow:
        return follow_task(client, task, args, out)
    if args.json:
        print_json(task, out)
    else:
        out.write(f"{what} {task['reference']} ({task['task_type']}, id {task['id']})\n")
    return 0


# ---- following a task -------------------------------------------------------------------------


def follow_task(
    client: ApiClient, task: dict[str, Any], args: argparse.Namespace, out: TextIO
) -> int:
    """Poll the task every 0.5 s until it ends: a bar redrawn in place on a terminal, a line
    per change otherwise, a JSON line per change with `--json`."""
    tty = out.isatty() and not args.json
    clock = Times(args.utc)
    last = ""
    while True:
        line = json.dumps(task) if args.json else progress_line(task, _width(tty), clock)
        if tty:
            out.write("\r\x1b[2K" + line)
        elif line != last:
            out.write(line + "\n")
        out.flush()
        last = line
        if task["status"] in FINISHED:
            break
        time.sleep(0.5)
        task = client.call("GET", f"/api/sync/tasks/{quoted(task['id'])}")
    if tty:
        out.write("\n")
    if task["status"] != "completed" and not args.json:
        out.write(f"{task['reference']} {task['status']}: {task['error'] or task['message']}\n")
    return 0 if task["status"] == "completed" else EXIT_TASK_FAILED


def shown_progress(task: dict[str, Any]) -> int:
    """The percentage a bar shows: where the work is, or where it stopped; a pending task has
    not started its next attempt, so it shows 0 whatever an earlier attempt reached."""
    if task["status"] == "pending":
        return 0
    return max(0, min(100, int(task["progress"])))


def progress_line(task: dict[str, Any], width: int = 100, clock: Times | None = None) -> str:
    """`HD6EKSD8DO9 noop running [########------------]  40% step 4/10 (4/10 rows)`."""
    percent = shown_progress(task)
    bar_width = 24
    filled = round(bar_width * percent / 100)
    bar = "#" * filled + "-" * (bar_width - filled)
    rows = ""
    if task.get("total_rows") and task["status"] != "pending":
        rows = f" ({task['processed_rows']}/{task['total_rows']} rows)"
    text = state_text(task, clock or Times())
    head = f"{task['reference']} {task['task_type']} {task['status']:<9} [{bar}] {percent:>3}%"
    line = f"{head} {text}{rows}".rstrip()
    return line if len(line) <= width else line[: max(10, width - 1)] + "…"


def state_text(task: dict[str, Any], clock: Times) -> str:
    """What a task is doing, in words: why a pending one waits, the error of a failed one,
    else its last message."""
    if task["status"] == "pending":
        return waiting_text(task, clock)
    if task["status"] == "failed":
        return str(task.get("error") or task.get("message") or "")
    return str(task.get("message") or "")


def waiting_text(task: dict[str, Any], clock: Times) -> str:
    """Why a pending task waits, from the API's `waiting` (the reasons of `schedule.waiting`;
    from its `run_after` and `attempt` alone when the answer has none)."""
    waiting = task.get("waiting") or {}
    reason = waiting.get("reason")
    nxt = f"attempt {task['attempt'] + 1} of {task['max_attempts']}"
    due = waiting.get("due_at") or task.get("run_after")
    slots = waiting.get("slots") or {}
    busy = f"{slots.get('busy', '?')}/{slots.get('total', '?')} busy"
    place = waiting.get("position")
    line = f", {_ordinal(place)} in line" if place else ""
    if reason == "retry_backoff" or (reason is None and task["attempt"] and _future(due)):
        text = f"retry: {nxt} at {clock.format(due)}"
        error = waiting.get("last_error") or task.get("error")
        return f"{text}; last error: {error}" if error else text
    if reason == "due_later" or (reason is None and _future(due)):
        return f"due at {clock.format(due)}"
    if reason == "external_worker":
        service = task.get("service") or "its service"
        return f"waiting for an external worker of {service} (GET /api/crontask{line})"
    if reason == "no_node":
        return "waiting: no daemon on this database is running"
    if reason == "type_limit":
        limit = waiting.get("type_limit") or {}
        return (
            f"waiting: {task['task_type']} limit reached "
            f"({limit.get('running', '?')}/{limit.get('limit', '?')} running)"
        )
    if reason == "no_free_slot":
        return f"waiting for a free slot ({busy}{line})"
    if reason == "queued":
        return f"queued: a slot is free ({busy}{line}), starts within a poll"
    return "queued" if task["attempt"] == 0 else f"queued: {nxt}"


def _future(iso_time: str | None) -> bool:
    moment = parse_time(iso_time)
    return moment is not None and moment > datetime.now(UTC)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _width(tty: bool) -> int:
    return shutil.get_terminal_size((100, 20)).columns - 1 if tty else 200


# ---- formatting -------------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    """An API time (`2026-01-01T12:00:00.000Z`) as an aware datetime; None for null."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Times:
    """Formats API times for people: local time with its UTC offset, or UTC (`--utc`)."""

    utc: bool = False

    def format(self, value: str | None) -> str:
        """`2026-01-01 15:00:00+03:00`, or `2026-01-01 12:00:00+00:00` in UTC; `-` for none."""
        moment = parse_time(value)
        if moment is None:
            return value or "-"
        shown = moment.astimezone(UTC) if self.utc else moment.astimezone()
        return shown.isoformat(sep=" ", timespec="seconds")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], max_width: int = 60) -> str:
    """A plain text table with aligned columns; long cells are cut with an ellipsis."""
    cells = [[_cell(c, max_width) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def _message_width(rows: Sequence[Sequence[str]]) -> int:
    """How wide the last column (the message) may be: what the terminal leaves of its width,
    at least 60; on a pipe or a file, no cut at all."""
    if not sys.stdout.isatty():
        return 10_000
    used = sum(max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]) - 1))
    return max(60, shutil.get_terminal_size((120, 20)).columns - used)


def describe_task(task: dict[str, Any], clock: Times | None = None) -> str:
    """A human summary of one task with its attempts; nothing cut."""
    clock = clock or Times()
    status = task["status"] + (" (cancel requested)" if task["cancel_requested"] else "")
    rows = ""
    if task.get("total_rows"):
        rows = f" ({task['processed_rows']}/{task['total_rows']} rows)"
    fields = [
        ("reference", task["reference"]),
        ("id", task["id"]),
        ("type", task["task_type"]),
        ("status", status),
        ("progress", f"{shown_progress(task)}%{rows}"),
    ]
    if task["status"] == "pending":
        fields.append(("waiting", waiting_text(task, clock)))
    fields += [
        ("message", task["message"] or "-"),
        ("priority", task["priority"]),
        ("data source", task["data_source_id"] or "-"),
        ("attempt", f"{task['attempt']} of {task['max_attempts']}"),
        ("record errors", task["error_count"]),
        ("retry of", task["retry_of"] or "-"),
        ("created", clock.format(task["created_at"])),
        *([("run after", clock.format(task["run_after"]))] if task["status"] == "pending" else []),
        ("started", clock.format(task["started_at"])),
        ("finished", clock.format(task["finished_at"])),
        ("error", task["error"] or "-"),
    ]
    text = "".join(f"{name + ':':<15}{value}\n" for name, value in fields)
    text += "parameters:    " + json.dumps(task["parameters"], ensure_ascii=False) + "\n"
    if task["result"] is not None:
        text += "result:        " + json.dumps(task["result"], ensure_ascii=False) + "\n"
    attempts = task.get("attempts") or []
    if attempts:
        rows_ = [
            [
                str(a["attempt"]),
                a["node_id"],
                clock.format(a["started_at"]),
                a["outcome"] or "running",
                a["error"] or "",
            ]
            for a in attempts
        ]
        headers = ["ATTEMPT", "NODE", "STARTED", "OUTCOME", "ERROR"]
        text += "\n" + table(headers, rows_, max_width=10_000)
    return text


def _cell(value: Any, max_width: int) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def task_parameters(args: argparse.Namespace) -> dict[str, Any]:
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


def print_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def quoted(key: str) -> str:
    return quote(key, safe="")
