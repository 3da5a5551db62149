"""The admin API for the forget set (admin key only). Thin: parse, call the index service, respond.

Errors never quote an entry's text: they name the field, the entry's position or the import line.
"""

from __future__ import annotations

import json
import logging
import re
from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from obliviate.index.entry import EntryIn
from obliviate.proxy import admin_protocol as wire
from obliviate.proxy.admin_protocol import MAX_LIST_ITEMS, ForgetEntryIn, MatchRequest, ScoreRequest
from obliviate.proxy.auth import Principal, require_admin
from obliviate.proxy.body import parse_request, read_body, read_json
from obliviate.proxy.errors import BadRequest, NotFound, OpenAIError, PayloadTooLarge, validation_error

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)], tags=["admin"])
Admin = Annotated[Principal, Depends(require_admin)]

_ENTRY_ID = re.compile(r"^fe_[0-9a-f]{32}$")


class IndexDisabled(OpenAIError):
    status_code = 503
    error_type = "service_unavailable"


def _index(request: Request) -> Any:
    index = request.app.state.index
    if index is None:
        raise IndexDisabled("the forget-set index is disabled (OBLIVIATE_INDEX_ENABLED=false)", code="index_disabled")
    return index


def _invalid(exc: Any, prefix: str = "") -> OpenAIError:
    cls = PayloadTooLarge if exc.too_large else BadRequest
    return cls(f"{prefix}{exc}", code=exc.code, param=exc.param)


async def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from obliviate.index.embedder import EmbedderUnavailable

    try:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))
    except EmbedderUnavailable as exc:  # names the package to install; quotes no entry
        raise IndexDisabled(f"the embedder is unavailable: {exc}", code="embedder_unavailable") from None


def _to_entry(body: ForgetEntryIn) -> EntryIn:
    return EntryIn(**body.model_dump())


async def _add(request: Request, items: list[Any], actor: str, prefix: str = "") -> list[Any]:
    from obliviate.index.service import InvalidEntry

    index = _index(request)
    try:
        return await _run(index.add, items, actor)
    except InvalidEntry as exc:
        raise _invalid(exc, prefix) from None


# -- entries ---------------------------------------------------------------------------------------


@router.post("/forget")
async def add_entries(request: Request, principal: Admin) -> JSONResponse:
    """One entry (an object) or several (a list); 201 when any is new, 200 when all existed."""
    _index(request)
    data = await read_json(request, request.app.state.settings.max_body_bytes)
    raw = data if isinstance(data, list) else [data]
    if not raw:
        raise BadRequest("send an entry object or a non-empty list of them", code="invalid_value")
    if len(raw) > MAX_LIST_ITEMS:
        raise PayloadTooLarge(f"at most {MAX_LIST_ITEMS} entries per call; use /admin/forget:import", code="too_many")
    items = []
    for i, obj in enumerate(raw):
        if not isinstance(obj, dict):
            raise BadRequest(f"entry {i}: must be a JSON object", code="invalid_value", param=f"[{i}]")
        try:
            items.append(ForgetEntryIn.model_validate(obj))
        except ValidationError as exc:
            err = validation_error(exc)
            where = f"entry {i}: " if isinstance(data, list) else ""
            raise BadRequest(where + err.message, code=err.code, param=err.param) from None
    results = await _add(request, [_to_entry(item) for item in items], principal.key_id)
    status = 201 if any(r.created for r in results) else 200
    return JSONResponse(wire.added(results), status_code=status)


@router.post("/forget:import")
async def import_entries(
    request: Request, principal: Admin, store_partial: Annotated[bool, Query(alias="partial")] = False
) -> JSONResponse:
    """JSON Lines: TOFU records (``question``, ``answer``, extra fields ignored) or ``{"text": ...}``.

    A bad line is a 400 naming its line number and nothing is stored, unless ``?partial=true``: then
    the good lines are stored and the bad ones listed.
    """
    from obliviate.index.service import InvalidEntry

    index = _index(request)
    settings = request.app.state.settings
    body = await read_body(request, settings.index_max_import_bytes)
    try:
        lines = body.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise BadRequest("the upload is not UTF-8 text", code="invalid_encoding") from None
    items: list[Any] = []
    errors: list[dict[str, Any]] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = _parse_line(line)
            index.prepare([entry])
        except (ValueError, InvalidEntry) as exc:
            errors.append({"line": n, "message": f"line {n}: {exc}", "code": getattr(exc, "code", "invalid_line")})
            continue
        items.append(entry)
    if errors and not store_partial:
        first = errors[0]
        more = f" ({len(errors)} bad lines in all)" if len(errors) > 1 else ""
        raise BadRequest(
            f"{first['message']}{more}; nothing was stored (send ?partial=true to store the good lines)",
            code=first["code"],
            param=f"line {first['line']}",
        )
    if not items:
        if errors:
            return JSONResponse(wire.imported([], errors))
        raise BadRequest("the upload holds no records", code="empty_upload")
    results = await _add(request, items, principal.key_id)
    body_out = wire.imported(results, errors)
    created = body_out["created"]
    logger.info("import by %s: %d records, %d new, %d bad lines", principal.key_id, len(results), created, len(errors))
    return JSONResponse(body_out, status_code=201 if created else 200)


def _parse_line(line: str) -> EntryIn:
    """One JSONL record -> EntryIn. Raises ValueError with a message that quotes no content."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({getattr(exc, 'msg', 'parse error')})") from None
    if not isinstance(obj, dict):
        raise ValueError("a record must be a JSON object")
    text, question, answer = obj.get("text"), obj.get("question"), obj.get("answer")
    for name, value in (("text", text), ("question", question), ("answer", answer)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"field '{name}' must be a string")
    if text is None and not (isinstance(question, str) and isinstance(answer, str)):
        raise ValueError("a record needs 'text', or 'question' and 'answer'")
    fields: dict[str, Any] = {}
    for name in ("aliases", "tags", "scope"):
        if name in obj:
            fields[name] = obj[name]
    try:
        checked = ForgetEntryIn.model_validate({"text": text, "question": question, "answer": answer, **fields})
    except ValidationError as exc:
        raise ValueError(validation_error(exc).message) from None
    return _to_entry(checked)


@router.get("/forget")
async def list_entries(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_ITEMS)] = 50,
    after: Annotated[int, Query(ge=0, description="cursor: next_after from the previous page")] = 0,
    tag: str | None = None,
    scope: Annotated[str | None, Query(description="a key id (entries that apply to it), or * (global only)")] = None,
) -> dict[str, Any]:
    index = _index(request)
    rows = await _run(index.list, limit=limit + 1, after=after, tag=tag, scope=scope)
    return wire.page(rows, limit, after)


@router.post("/forget/match")
async def match(request: Request) -> dict[str, Any]:
    """The entries closest to a text, with scores: for tuning thresholds and debugging."""
    index = _index(request)
    data = await read_json(request, request.app.state.settings.max_body_bytes)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    try:
        req = MatchRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
    if not req.text.strip():
        raise BadRequest("text is empty", code="empty_text", param="text")
    limit = request.app.state.settings.index_max_entry_chars
    if len(req.text) > limit:
        raise PayloadTooLarge(
            f"text has {len(req.text)} characters; the limit is {limit}", code="text_too_large", param="text"
        )
    found = await _run(index.match, req.text, req.top_k, key_id=req.key_id, min_score=req.min_score)
    return wire.matches(found)


@router.get("/forget/{entry_id}")
async def get_entry(request: Request, entry_id: str) -> dict[str, Any]:
    entry = await _run(_index(request).get, entry_id)
    if entry is None:
        raise _not_found(entry_id)
    return {"object": "forget.entry", **entry}


@router.delete("/forget/{entry_id}", status_code=204)
async def delete_entry(request: Request, entry_id: str, principal: Admin) -> Response:
    if not await _run(_index(request).delete, entry_id, principal.key_id):
        raise _not_found(entry_id)
    return Response(status_code=204)


def _not_found(entry_id: str) -> NotFound:
    shown = f" {entry_id}" if _ENTRY_ID.match(entry_id) else ""  # echo only what looks like one of our ids
    return NotFound(f"no forget-set entry{shown}", code="entry_not_found", param="id")


# -- audit and health of the index ----------------------------------------------------------------


@router.get("/audit")
async def audit(
    request: Request,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_ITEMS)] = 100,
) -> dict[str, Any]:
    """Every change: version, op, entry id, content hash, who (key id) and when. Never the text."""
    rows = await _run(_index(request).audit, after=after, limit=limit + 1)
    return wire.page(rows, limit, after)


@router.get("/index")
async def index_status(request: Request) -> dict[str, Any]:
    """Store and index counts, versions, and whether they agree."""
    return {"object": "forget.index", **(await _run(_index(request).verify))}


# -- teacher-forced scoring ------------------------------------------------------------------------


@router.post("/score")
async def score(request: Request, principal: Admin) -> dict[str, Any]:
    """Log-probabilities of each item's answer under the same interventions as generation (the
    guard pipeline runs per item, as for a chat or completion request). ``null`` stands for a
    log-probability of minus infinity (a token the interventions forbid)."""
    req = await parse_request(request, ScoreRequest)
    return await request.app.state.scoring.score(req, principal, request.state.request_id)
