"""`syncd schedules list | show | add | edit | rm | pause | resume | run | backfill`.

A client of `/api/schedules` like the other client commands (`controllers.client`): the
trigger is shown in words (the daemon's cron-descriptor) with the next fire times in UTC and
in the schedule's zone.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from controllers.client import (
    ApiClient,
    ClientError,
    print_json,
    quoted,
    show_task,
    table,
    task_parameters,
)

PATH = "/api/schedules"
#: Schedules asked for a page at a time by `schedules list`.
LIST_PAGE = 500


def add_schedule_commands(
    sub: Any, common: argparse.ArgumentParser, follow: argparse.ArgumentParser
) -> None:
    """Add `schedules ...` to the `syncd` sub-command parser."""
    group = sub.add_parser("schedules", help="define and steer schedules").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )

    class Leaves:
        """Each leaf parser remembered as its `parser` default (its own usage on a bad option)."""

        @staticmethod
        def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
            parser: argparse.ArgumentParser = group.add_parser(name, **kw)
            parser.set_defaults(parser=parser)
            return parser

    schedules = Leaves()
    schedules.add_parser("list", parents=[common], help="every schedule").set_defaults(run=_list)
    show = schedules.add_parser("show", parents=[common], help="one schedule, its next fires")
    show.add_argument("id", help="the schedule's id")
    show.set_defaults(run=_show)

    add = schedules.add_parser("add", parents=[common], help="define a schedule")
    add.add_argument("id", help="the new schedule's id (a slug: a-z, 0-9, _ . -)")
    add.add_argument("task_type", help="the task type each fire enqueues")
    _definition_flags(add)
    add.set_defaults(run=_add)
    edit = schedules.add_parser("edit", parents=[common], help="change some fields of one")
    edit.add_argument("id", help="the schedule's id")
    edit.add_argument("--type", dest="task_type", metavar="TYPE", help="another task type")
    _definition_flags(edit)
    edit.set_defaults(run=_edit)

    rm = schedules.add_parser("rm", parents=[common], help="delete a schedule")
    rm.add_argument("id", help="the schedule's id")
    rm.set_defaults(run=_rm)
    pause = schedules.add_parser("pause", parents=[common], help="stop firing, with a note")
    pause.add_argument("id", help="the schedule's id")
    pause.add_argument("--note", help="why (shown on the dashboard)")
    pause.set_defaults(run=_pause)
    resume = schedules.add_parser("resume", parents=[common], help="fire again")
    resume.add_argument("id", help="the schedule's id")
    resume.set_defaults(run=_resume)
    run = schedules.add_parser("run", parents=[common, follow], help="enqueue its task now")
    run.add_argument("id", help="the schedule's id")
    run.set_defaults(run=_run)
    backfill = schedules.add_parser(
        "backfill", parents=[common], help="enqueue the fires of a past range"
    )
    backfill.add_argument("id", help="the schedule's id")
    backfill.add_argument("--start", required=True, help="ISO 8601 time with a zone")
    backfill.add_argument("--end", required=True, help="ISO 8601 time with a zone")
    backfill.set_defaults(run=_backfill)


def _utc(value: str | None) -> str:
    """`2026-01-01T12:00:00Z` as `2026-01-01 12:00:00` (a column headed UTC)."""
    return value.replace("T", " ")[:19] if value else "-"


def _definition_flags(parser: argparse.ArgumentParser) -> None:
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--cron", help='five fields, e.g. "*/15 * * * *"')
    when.add_argument("--every", dest="every_s", type=float, help="an interval, in seconds")
    when.add_argument("--at", help="one fire at this ISO 8601 time (with a zone)")
    parser.add_argument("--name", help="a name for people")
    parser.add_argument("--tz", dest="timezone", help="IANA zone (default: the daemon's)")
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="a parameter"
    )
    parser.add_argument("--params", help="all parameters as a JSON object")
    parser.add_argument("--priority", type=int, metavar="N", help="-100..100, higher runs first")
    parser.add_argument(
        "--data-source", dest="data_source_id", metavar="ID", help="the data source to read"
    )
    parser.add_argument(
        "--interface", dest="interface_id", metavar="ID", help="the data source's interface"
    )
    parser.add_argument("--max-attempts", type=int, metavar="N", help="attempts per task, 1..20")
    parser.add_argument(
        "--timeout", dest="timeout_s", type=float, metavar="S", help="each task's timeout, s"
    )
    parser.add_argument("--start", dest="start_at", help="no fire before (ISO 8601)")
    parser.add_argument("--end", dest="end_at", help="no fire after (ISO 8601)")
    parser.add_argument(
        "--jitter", dest="jitter_s", type=float, metavar="S", help="delay each task 0..S s"
    )
    parser.add_argument(
        "--overlap",
        choices=["skip", "queue_one", "cancel_previous", "allow"],
        help="a fire while the previous task is unfinished (default skip)",
    )
    parser.add_argument(
        "--catch-up",
        dest="catch_up",
        choices=["none", "latest", "all"],
        help="fires missed while no daemon ran (default latest)",
    )
    parser.add_argument("--window", dest="catch_up_window_s", type=float, help="catch-up window, s")


_FIELDS = (
    "name",
    "timezone",
    "priority",
    "data_source_id",
    "interface_id",
    "max_attempts",
    "timeout_s",
    "start_at",
    "end_at",
    "jitter_s",
    "overlap",
    "catch_up",
    "catch_up_window_s",
)


def _trigger(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.cron is not None:
        return {"cron": args.cron}
    if args.every_s is not None:
        return {"every_s": args.every_s}
    if args.at is not None:
        return {"at": args.at}
    return None


def _body(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """`base` (a definition) with the fields the flags give."""
    body = dict(base)
    trigger = _trigger(args)
    if trigger is not None:
        body["trigger"] = trigger
    for name in _FIELDS:
        value = getattr(args, name)
        if value is not None:
            body[name] = value
    if args.task_type is not None:
        body["task_type"] = args.task_type
    if args.param or args.params:
        body["parameters"] = task_parameters(args)
    return body


_DEFINITION = (
    "name",
    "task_type",
    "trigger",
    "parameters",
    *_FIELDS,
    "paused",
    "pause_note",
)


def _add(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    if _trigger(args) is None:
        raise ClientError("give a trigger: --cron, --every or --at")
    made = client.call("POST", PATH, body=_body(args, {"id": args.id}))
    return _shown(made, args, out)


def _edit(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    current = client.call("GET", f"{PATH}/{quoted(args.id)}")
    base = {k: current[k] for k in _DEFINITION if current.get(k) is not None}
    changed = client.call("PUT", f"{PATH}/{quoted(args.id)}", body=_body(args, base))
    return _shown(changed, args, out)


def _list(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    schedules: list[dict[str, Any]] = []
    page = 1
    while True:  # every page (the API answers at most LIST_PAGE a page)
        answer = client.call("GET", PATH, query={"page": page, "size": LIST_PAGE})
        schedules.extend(answer["schedules"])
        if page >= answer["pagination"]["total_pages"]:
            break
        page += 1
    if args.json:
        print_json({"schedules": schedules}, out)
        return 0
    rows = [
        [
            s["id"],
            s["description"],
            s["task_type"],
            "paused" if s["paused"] else _utc(s["next_run_at"]),
            (s["last_run"] or {}).get("status", "-"),
            s["origin"],
        ]
        for s in schedules
    ]
    if not rows:
        out.write("no schedules\n")
        return 0
    out.write(table(["ID", "WHEN", "TYPE", "NEXT (UTC)", "LAST RUN", "FROM"], rows))
    return 0


def _show(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    return _shown(client.call("GET", f"{PATH}/{quoted(args.id)}"), args, out)


def _shown(schedule: dict[str, Any], args: argparse.Namespace, out: TextIO) -> int:
    if args.json:
        print_json(schedule, out)
        return 0
    out.write(describe_schedule(schedule))
    return 0


def describe_schedule(s: dict[str, Any]) -> str:
    """A human summary of one schedule: its trigger in words and its next fires."""
    paused = "yes" if s["paused"] else "no"
    if s["paused"] and s["pause_note"]:
        paused += f" ({s['pause_note']})"
    fields = [
        ("id", s["id"]),
        ("name", s["name"] or "-"),
        ("when", f"{s['description']} ({s['timezone']})"),
        ("trigger", s["trigger"]),
        ("task type", s["task_type"]),
        ("data source", s["data_source_id"] or "-"),
        ("overlap", s["overlap"]),
        ("catch-up", s["catch_up"]),
        ("paused", paused),
        ("from", s["managed_by"] or "the API"),
        ("last error", s["last_error"] or "-"),
    ]
    text = "".join(f"{name + ':':<13}{value}\n" for name, value in fields)
    fires = s.get("next_fires") or []
    if fires:
        rows = [[_utc(f["utc"]), f["local"][:19].replace("T", " ")] for f in fires]
        text += "\n" + table(["NEXT FIRE (UTC)", f"IN {s['timezone']}"], rows)
    runs = s.get("runs") or []
    if runs:
        rows = [[_utc(r["scheduled_for"]), r["status"], r["task_id"]] for r in runs]
        text += "\n" + table(["SCHEDULED FOR (UTC)", "STATUS", "TASK"], rows)
    return text


def _rm(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    client.call("DELETE", f"{PATH}/{quoted(args.id)}")
    out.write(f"deleted {args.id}\n")
    return 0


def _pause(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    body = {"note": args.note} if args.note else {}
    return _shown(client.call("POST", f"{PATH}/{quoted(args.id)}/pause", body=body), args, out)


def _resume(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    return _shown(client.call("POST", f"{PATH}/{quoted(args.id)}/resume"), args, out)


def _run(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    return show_task(client, client.call("POST", f"{PATH}/{quoted(args.id)}/run"), args, out)


def _backfill(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    body = {"start": args.start, "end": args.end}
    answer = client.call("POST", f"{PATH}/{quoted(args.id)}/backfill", body=body)
    if args.json:
        print_json(answer, out)
        return 0
    tasks = answer["tasks"]
    rows = [[_utc(t["scheduled_for"]), t["reference"], t["status"]] for t in tasks]
    out.write(f"{len(tasks)} task(s) enqueued\n")
    if rows:
        out.write(table(["SCHEDULED FOR (UTC)", "REFERENCE", "STATUS"], rows))
    return 0
