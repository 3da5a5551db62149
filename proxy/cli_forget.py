"""``obliviate forget add | import | list | rm | match``: the forget-set admin client.

Talks to a running proxy over HTTP. The URL and the admin key come from ``--url`` / ``--admin-key``
or ``OBLIVIATE_URL`` / ``OBLIVIATE_ADMIN_KEY``. Output is JSON on stdout; errors go to stderr with
a non-zero exit status.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


class CliError(Exception):
    pass


def _client(args: argparse.Namespace) -> Any:
    import httpx

    url = (args.url or os.environ.get("OBLIVIATE_URL") or DEFAULT_URL).rstrip("/")
    if url.endswith("/v1"):
        url = url[:-3]
    key = args.admin_key or os.environ.get("OBLIVIATE_ADMIN_KEY")
    if not key:
        raise CliError("no admin key: pass --admin-key or set OBLIVIATE_ADMIN_KEY")
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=args.timeout)


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    try:
        with _client(args) as client:
            resp = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the proxy: {exc}") from None
    if resp.status_code == 204:
        return None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code >= 400:
        err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        raise CliError(f"HTTP {resp.status_code}: {err.get('message') or resp.text[:200]}")
    return body


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _scope(args: argparse.Namespace) -> list[str]:
    ids = list(args.scope or [])
    ids += [hashlib.sha256(k.encode()).hexdigest()[:12] for k in (args.scope_key or [])]
    return ids


def cmd_add(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    entry: dict[str, Any] = {"tags": args.tag or [], "aliases": args.alias or [], "scope": _scope(args)}
    if text is not None:
        entry["text"] = text
    if args.question is not None:
        entry["question"] = args.question
    if args.answer is not None:
        entry["answer"] = args.answer
    _print(_call(args, "POST", "/admin/forget", json=entry))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path} is not a file")
    data = path.read_bytes()
    if path.suffix == ".json":  # a JSON list of strings or records (e.g. MUSE raw/forget.json): to JSONL
        records = json.loads(data)
        if not isinstance(records, list):
            raise CliError(f"{path}: a .json file must hold a list")
        data = "\n".join(json.dumps({"text": r} if isinstance(r, str) else r) for r in records).encode()
    params = {"partial": "true"} if args.partial else None
    _print(
        _call(
            args,
            "POST",
            "/admin/forget:import",
            content=data,
            params=params,
            headers={"Content-Type": "application/x-ndjson"},
        )
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit, "after": args.after}
    if args.tag:
        params["tag"] = args.tag
    if args.scope:
        params["scope"] = args.scope
    _print(_call(args, "GET", "/admin/forget", params=params))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    for entry_id in args.ids:
        _call(args, "DELETE", f"/admin/forget/{entry_id}")
        print(entry_id)
    return 0


def cmd_match(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"text": sys.stdin.read() if args.text == "-" else args.text}
    if args.top_k:
        body["top_k"] = args.top_k
    _print(_call(args, "POST", "/admin/forget/match", json=body))
    return 0


def _guard(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args) or 0)
        except CliError as exc:
            print(f"obliviate forget: {exc}", file=sys.stderr)
            return 1

    return run


def register(sub: argparse._SubParsersAction) -> None:
    forget = sub.add_parser("forget", help="manage the forget set of a running proxy (admin key)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"proxy URL (env OBLIVIATE_URL, default {DEFAULT_URL})")
    common.add_argument("--admin-key", help="admin key (env OBLIVIATE_ADMIN_KEY)")
    common.add_argument("--timeout", type=float, default=600.0, help="seconds (imports embed on the server)")
    fsub = forget.add_subparsers(dest="forget_cmd", required=True)

    add = fsub.add_parser("add", parents=[common], help="add one entry")
    add.add_argument("text", nargs="?", help="the text to forget ('-' reads stdin)")
    add.add_argument("--question")
    add.add_argument("--answer")
    add.add_argument("--alias", action="append", help="a name or phrase for the subject (repeatable)")
    add.add_argument("--tag", action="append", help="repeatable")
    add.add_argument("--scope", action="append", help="a client key id it applies to (repeatable; default all)")
    add.add_argument("--scope-key", action="append", help="a client key it applies to (hashed here, never sent)")
    add.set_defaults(func=_guard(cmd_add))

    imp = fsub.add_parser("import", parents=[common], help="import JSON Lines (TOFU or {text}) or a JSON list")
    imp.add_argument("file")
    imp.add_argument("--partial", action="store_true", help="store the good lines even if some are bad")
    imp.set_defaults(func=_guard(cmd_import))

    lst = fsub.add_parser("list", parents=[common], help="list entries")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--after", type=int, default=0, help="cursor (next_after of the previous page)")
    lst.add_argument("--tag")
    lst.add_argument("--scope", help="a key id, or * for global entries")
    lst.set_defaults(func=_guard(cmd_list))

    rm = fsub.add_parser("rm", parents=[common], help="delete entries by id")
    rm.add_argument("ids", nargs="+")
    rm.set_defaults(func=_guard(cmd_rm))

    match = fsub.add_parser("match", parents=[common], help="the entries closest to a text, with scores")
    match.add_argument("text", help="'-' reads stdin")
    match.add_argument("--top-k", type=int)
    match.set_defaults(func=_guard(cmd_match))
