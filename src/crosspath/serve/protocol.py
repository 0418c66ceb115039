"""The OpenAI wire format: request schemas, replies, stream chunks and error bodies.

Unknown OpenAI fields (presence_penalty, user, ...) are accepted and ignored; a body that is not
JSON, holds a string that is not valid Unicode (a lone surrogate such as "\\ud800"), or does not
match these schemas is answered 422 with an OpenAI-style error naming the field.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import RequestError

CHUNK_CHARS = 256  # the final content is streamed in pieces of at most this many characters


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=2**62)  # backends add offsets per path and round
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    crosspath: dict[str, Any] | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None


class ChatBody(_Body):
    messages: list[Message] = Field(min_length=1)


class CompletionBody(_Body):
    prompt: str | list[str]


def invalid_text(data: Any, where: str = "") -> str | None:
    """Where the first string (key or value) that cannot be encoded as UTF-8 is, e.g.
    "messages[0].content", or None. JSON may spell lone surrogates ("\\ud800"); no tokenizer takes them.

    >>> invalid_text({"messages": [{"content": "ok"}, {"content": "\\ud800"}]})
    'messages[1].content'
    """
    stack = [(data, where)]
    while stack:
        x, at = stack.pop()
        if isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return at or "body"
        elif isinstance(x, dict):
            stack.extend((v, f"{at}.{k}" if at else str(k)) for k, v in reversed(list(x.items())))
            stack.extend((k, at or "body") for k in x if isinstance(k, str))
        elif isinstance(x, list):
            stack.extend((v, f"{at}[{i}]") for i, v in reversed(list(enumerate(x))))
    return None


def parse_body(raw: bytes, kind: str) -> dict[str, Any]:
    """bytes -> a validated plain dict, or RequestError(422)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(422, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise RequestError(422, "the request body must be a JSON object", code="invalid_json")
    bad = invalid_text(data)
    if bad is not None:
        raise RequestError(422, f"{bad}: not valid Unicode text (a lone surrogate such as \\ud800?)",
                           code="invalid_text", param=bad)
    try:
        body = (ChatBody if kind == "chat" else CompletionBody).model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise RequestError(422, f"invalid request: {where}: {first['msg']}{more}", code="invalid_value",
                           param=where or None) from None
    return body.model_dump(exclude_none=False)


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def reply(kind: str, rid: str, model: str, ans: dict[str, Any]) -> dict[str, Any]:
    """The non-streamed reply body."""
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": ans["text"]},
                  "finish_reason": ans["finish_reason"], "logprobs": None}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": ans["text"], "finish_reason": ans["finish_reason"], "logprobs": None}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [choice],
            "usage": ans["usage"], "crosspath": ans["crosspath"]}


def chunk(kind: str, rid: str, model: str, *, content: str | None = None, role: bool = False,
          finish: str | None = None, extra: dict | None = None, usage: dict | None = None,
          choices: bool = True) -> str:
    """One server-sent event `data: {...}\\n\\n` in the OpenAI chunk format."""
    if kind == "chat":
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if content is not None:
            delta["content"] = content
        c = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        c = {"index": 0, "text": content or "", "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    body: dict[str, Any] = {"id": rid, "object": obj, "created": int(time.time()), "model": model,
                            "choices": [c] if choices else [], "usage": usage}
    if extra is not None:
        body["crosspath"] = extra
    return f"data: {json.dumps(body)}\n\n"


def final_chunks(kind: str, rid: str, model: str, ans: dict[str, Any], include_usage: bool) -> list[str]:
    """The content in pieces, then the finish chunk (with the `crosspath` field), the usage chunk
    when asked for (`stream_options.include_usage`), and `data: [DONE]`."""
    text = ans["text"]
    out = [chunk(kind, rid, model, content=text[i: i + CHUNK_CHARS]) for i in range(0, len(text), CHUNK_CHARS)]
    out.append(chunk(kind, rid, model, content="" if kind == "completion" else None, finish=ans["finish_reason"],
                     extra=ans["crosspath"]))
    if include_usage:
        out.append(chunk(kind, rid, model, usage=ans["usage"], choices=False))
    return out + [DONE]


def error_event(err: RequestError) -> str:
    return f"data: {json.dumps(err.body())}\n\n"


DONE = "data: [DONE]\n\n"
