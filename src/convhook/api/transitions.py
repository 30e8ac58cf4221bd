"""``POST /api/v2/conversations/{id}/{dial|join|leave|end|fail|analysis}``: lifecycle moves.

Each answers the conversation as it is after the move; every move but ``dial`` records its
event in the same transaction. A move the conversation's phase does not allow answers 409.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response

from convhook.api.auth import CurrentWorkspace
from convhook.api.deps import get_outbox
from convhook.api.fields import RequestModel
from convhook.events import Conversation, EndReason, Timestamp
from convhook.lifecycle import Action
from convhook.outbox import Outbox

router = APIRouter(prefix="/api/v2/conversations", tags=["lifecycle"])
OutboxDep = Annotated[Outbox, Depends(get_outbox)]

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


async def _move(
    outbox: Outbox,
    workspace_id: str,
    conversation_id: str,
    action: Action,
    body: RequestModel | None,
) -> Response:
    given = body.wire() if body is not None else {}
    change = await outbox.transition(workspace_id, conversation_id, action, given)
    return Response(change.json, media_type="application/json")


@router.post("/{conversation_id}/dial", response_model=Conversation, responses=_RESPONSES)
async def dial(
    conversation_id: str,
    workspace: CurrentWorkspace,
    outbox: OutboxDep,
    body: Annotated[DialIn | None, Body()] = None,
) -> Response:
    """``created`` -> ``dialing``; no event."""
    return await _move(outbox, workspace.id, conversation_id, Action.DIAL, body)


@router.post("/{conversation_id}/join", response_model=Conversation, responses=_RESPONSES)
async def join(
    conversation_id: str,
    workspace: CurrentWorkspace,
    outbox: OutboxDep,
    body: Annotated[JoinIn | None, Body()] = None,
) -> Response:
    """The user joined: ``active``; emits ``conversation.userJoined``."""
    return await _move(outbox, workspace.id, conversation_id, Action.JOIN, body)


@router.post("/{conversation_id}/leave", response_model=Conversation, responses=_RESPONSES)
async def leave(
    conversation_id: str,
    workspace: CurrentWorkspace,
    outbox: OutboxDep,
    body: Annotated[LeaveIn | None, Body()] = None,
) -> Response:
    """The user left; emits ``conversation.userLeft``."""
    return await _move(outbox, workspace.id, conversation_id, Action.LEAVE, body)


@router.post("/{conversation_id}/end", response_model=Conversation, responses=_RESPONSES)
async def end(
    conversation_id: str,
    workspace: CurrentWorkspace,
    outbox: OutboxDep,
    body: Annotated[EndIn | None, Body()] = None,
) -> Response:
    """The conversation ended: ``completed``; emits ``conversation.completed``."""
    return await _move(outbox, workspace.id, conversation_id, Action.END, body)


@router.post("/{conversation_id}/fail", response_model=Conversation, responses=_RESPONSES)
async def fail(
    conversation_id: str,
    workspace: CurrentWorkspace,
    outbox: OutboxDep,
    body: Annotated[FailIn | None, Body()] = None,
) -> Response:
    """The call failed or was not answered: ``failed``; emits ``conversation.completed``."""
    return await _move(outbox, workspace.id, conversation_id, Action.FAIL, body)


@router.post("/{conversation_id}/analysis", response_model=Conversation, responses=_RESPONSES)
async def analysis(
    conversation_id: str,
    workspace: CurrentWorkspace,
    outbox: OutboxDep,
    body: Annotated[AnalysisIn | None, Body()] = None,
) -> Response:
    """Post-call analysis is done; emits ``conversation.analysisCompleted``."""
    return await _move(outbox, workspace.id, conversation_id, Action.ANALYSIS, body)
