"""``POST /api/v2/conversations/{id}/{dial|join|leave|end|fail|analysis}``: lifecycle moves.

Each answers the conversation as it is after the move; every move but ``dial`` records its
event in the same transaction. A move the conversation's phase does not allow answers 409.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from convhook import tracing
from convhook.api.auth import current_workspace
from convhook.api.errors import UNPARSABLE, ApiError, invalid, validation_problems
from convhook.api.fields import RequestModel, Timestamp
from convhook.api.intake import refused_body
from convhook.errors import FieldProblem
from convhook.events import Conversation, EndReason
from convhook.lifecycle import Action
from convhook.outbox import Outbox
from convhook.tracing import TraceContext

router = APIRouter(prefix="/api/v2/conversations", tags=["lifecycle"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such conversation in this workspace."},
    409: {"description": "The conversation's state does not allow this transition."},
}


class DialIn(RequestModel):
    """Start placing the call."""

    call_start_time: Timestamp | None = None


class JoinIn(RequestModel):
    """The user joined; defaults to now."""

    user_join_time: Timestamp | None = None


class LeaveIn(RequestModel):
    """The user left; defaults to now."""

    user_leave_time: Timestamp | None = None


class EndIn(RequestModel):
    """The conversation ended normally."""

    call_end_time: Timestamp | None = None
    end_reason: EndReason | None = None
    recording_url: str | None = None


class FailIn(RequestModel):
    """The conversation failed or was not answered (``endReason`` defaults to
    ``user_did_not_answer``)."""

    call_end_time: Timestamp | None = None
    end_reason: EndReason | None = None


class AnalysisIn(RequestModel):
    """Post-call analysis results."""

    summary: str | None = None
    post_call_notes: str | None = None
    post_call_category1: str | None = None
    post_call_category2: str | None = None
    post_call_category3: str | None = None
    post_call_metadata: dict[str, Any] | None = None
    transcript: str | None = None


_NOT_AN_OBJECT = "Input should be a valid dictionary or object to extract fields from"


def _is_json(content_type: str | None) -> bool:
    """Whether a ``content-type`` names JSON (``application/json`` or ``application/*+json``)."""
    if not content_type:
        return False
    mime = content_type.partition(";")[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


class _NotFinite(ValueError):
    """A number json.loads would turn into inf or nan (json.dumps writes those as words no
    JSON parser reads)."""


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotFinite(text)
    return value


def _not_finite(text: str) -> float:
    raise _NotFinite(text)


# The hooks run only for floats and NaN/Infinity, which transition bodies rarely hold: the
# usual body pays nothing for the check.
_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_not_finite)


def given_fields(
    model: type[RequestModel], body: bytes, content_type: str | None
) -> dict[str, Any]:
    """The wire fields a transition request sets: ``{}`` for no body (or JSON ``null``);
    400 for malformed JSON, 422 naming the field for anything the model refuses or that
    :func:`~convhook.api.intake.refused_body` refuses on every route."""
    if not body:
        return {}
    if not _is_json(content_type):
        # Only JSON bodies are parsed; anything else is not an object of fields (unless the
        # intake checks every route shares refuse it first, as they do for FastAPI routes).
        raise refused_body(body) or invalid([FieldProblem("body", _NOT_AN_OBJECT)])
    refused = refused_body(body, numbers=False)
    if refused is not None:
        raise refused
    try:
        doc = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except _NotFinite:
        raise refused_body(body) or invalid([FieldProblem("body", "not finite")]) from None
    except json.JSONDecodeError:
        raise ApiError(
            400, "body is not valid JSON", [FieldProblem("body", "invalid JSON")]
        ) from None
    except ValueError:
        raise ApiError(400, UNPARSABLE, [FieldProblem("body", "cannot be parsed")]) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise invalid([FieldProblem("body", _NOT_AN_OBJECT)])
    try:
        parsed = model.model_validate(doc)
    except ValidationError as exc:
        raise invalid(validation_problems(exc.errors(include_url=False), strip=0)) from None
    return parsed.wire()


MODELS: dict[Action, type[RequestModel]] = {
    Action.DIAL: DialIn,
    Action.JOIN: JoinIn,
    Action.LEAVE: LeaveIn,
    Action.END: EndIn,
    Action.FAIL: FailIn,
    Action.ANALYSIS: AnalysisIn,
}
"""The body model of each transition route."""

_DOCS = {
    Action.DIAL: "``created`` -> ``dialing``; no event.",
    Action.JOIN: "The user joined: ``active``; emits ``conversation.userJoined``.",
    Action.LEAVE: "The user left; emits ``conversation.userLeft``.",
    Action.END: "The conversation ended: ``completed``; emits ``conversation.completed``.",
    Action.FAIL: "The call failed or was not answered: ``failed``; emits "
    "``conversation.completed``.",
    Action.ANALYSIS: "Post-call analysis is done; emits ``conversation.analysisCompleted``.",
}


SPANS = {a: f"POST /api/v2/conversations/{{id}}/{a.value}" for a in MODELS}


def received_trace(header: str | None) -> TraceContext | None:
    """The trace a request continues: its ``traceparent`` header (400 when malformed), or
    None to start one."""
    return None if header is None else tracing.parse(header)


def _add_route(action: Action, model: type[RequestModel]) -> None:
    # The route takes the raw request: authentication, body parsing and validation run in
    # the handler, not as FastAPI dependencies, which cost more per request than the work.
    async def move(conversation_id: str, request: Request) -> Response:
        workspace = await current_workspace(request)
        given = given_fields(model, await request.body(), request.headers.get("content-type"))
        outbox: Outbox = request.app.state.outbox
        trace = received_trace(request.headers.get(tracing.HEADER))
        with tracing.span(SPANS[action], trace, kind="server"):
            change = await outbox.transition(workspace.id, conversation_id, action, given)
        return Response(change.json, media_type="application/json")

    move.__name__ = move.__qualname__ = action.value
    move.__doc__ = _DOCS[action]
    body_schema = {
        "anyOf": [{"$ref": f"#/components/schemas/{model.__name__}"}, {"type": "null"}],
        "title": "Body",
    }
    router.post(
        f"/{{conversation_id}}/{action.value}",
        response_model=Conversation,
        responses=_RESPONSES,
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": body_schema}}}},
    )(move)


for _action, _model in MODELS.items():
    _add_route(_action, _model)
