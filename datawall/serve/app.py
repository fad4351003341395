"""The FastAPI app: OpenAI's /v1/models, /v1/completions and /v1/chat/completions over a datawall checkpoint.

Every request is validated before it is queued, so the batcher only sees jobs that can run; every mistake is
answered with OpenAI's error shape `{"error": {"message", "type", "param", "code"}}` and HTTP 400/401/404/413,
and the server keeps serving. Hostile input is cheap to refuse: a body over a byte limit derived from the
model's context is refused before it is parsed (`body_limit.py`), a prompt over its byte bound before it is
tokenized, and tokenizing runs on a worker thread, so one huge request never stalls the event loop. A request
whose client disconnects is cancelled, its rows dropped from the running batch.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import datawall
from datawall.errors import DatawallError
from datawall.model import load_checkpoint
from datawall.serve.batcher import Batcher, Choice, SamplingParams
from datawall.serve.body_limit import BodyLimit
from datawall.serve.chat import ChatTemplateError, as_dicts, render
from datawall.serve.docs import docs_page
from datawall.serve.schemas import (
    MAX_STOP,
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    SamplingRequest,
    TokenLogprob,
    TopLogprob,
    Usage,
)

log = logging.getLogger("datawall.serve")
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the rest of the context


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how the batcher groups requests."""

    max_n: int = 128  # samples per request (n x number of prompts)
    max_tokens: int = 1024  # new tokens per sample (the model's context caps it too)
    max_prompt_tokens: int | None = None  # tokens per prompt, bos included; None: the context minus one
    max_prompt_bytes: int | None = None  # UTF-8 bytes per text prompt, checked before tokenizing; None: derived
    max_pending: int = 1024  # queued requests before new ones get HTTP 429
    max_batch_rows: int = 256  # sequences per generate() call
    batch_window_s: float = 0.002  # how long the worker waits for more requests to join a batch


class APIError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def error_response(e: APIError) -> JSONResponse:
    """OpenAI's error body."""
    body = {"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.code}}
    return JSONResponse(body, status_code=e.status)


BYTES_PER_TOKEN_SLACK = 4  # a prompt may be this many times the bytes of its tokens' longest spelling
BODY_OVERHEAD_BYTES = 2**20  # JSON around the prompts: keys, messages, token-id lists


def prompt_bytes_bound(tok, max_prompt_tokens: int) -> int:
    """A generous UTF-8 size of any prompt that fits in max_prompt_tokens: that many tokens of the vocabulary's
    longest entry (byte-level entries spell one byte with up to two), times BYTES_PER_TOKEN_SLACK (normalizers)."""
    longest = max(len(t.encode("utf-8", "surrogatepass")) for t in tok.hf.get_vocab(with_added_tokens=True))
    return max_prompt_tokens * max(longest, 1) * BYTES_PER_TOKEN_SLACK


def body_bytes_bound(max_prompt_bytes: int, max_n: int) -> int:
    """The largest request body worth parsing: max_n prompts of max_prompt_bytes each, JSON-escaped (a control
    character takes 6 bytes, but the prompt bound already has 4x slack), plus the rest of the JSON."""
    return 2 * max_n * max_prompt_bytes + BODY_OVERHEAD_BYTES


def default_model_name(model_dir: Path) -> str:
    """The served model's id: the checkpoint directory's name (its run directory's for `RUN/checkpoint`)."""
    path = model_dir.resolve()
    return path.parent.name if path.name == "checkpoint" else path.name


def create_app(model_dir: str | Path, api_key: str | None = None, limits: Limits = Limits(),
               model_name: str | None = None, device: str = "cpu") -> FastAPI:
    """An app serving the checkpoint in model_dir; with api_key, /v1 requests need `Authorization: Bearer KEY`."""
    model_dir = Path(model_dir)
    ckpt = load_checkpoint(model_dir)
    model, tok, ctx = ckpt.model.to(device).eval(), ckpt.tokenizer, ckpt.config.max_seq_len
    name = model_name or default_model_name(model_dir)
    max_prompt = min(limits.max_prompt_tokens or ctx - 1, ctx - 1)
    max_prompt_bytes = limits.max_prompt_bytes or prompt_bytes_bound(tok, max_prompt)
    max_body_bytes = body_bytes_bound(max_prompt_bytes, limits.max_n)
    batcher = Batcher(model, tok, limits.max_batch_rows, limits.batch_window_s)
    created = int(time.time())
    fingerprint = f"datawall-{datawall.__version__}"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    # FastAPI's own /docs and /redoc load their scripts from a public CDN (a blank page offline); /docs here is
    # a page rendered on the server, and it and the OpenAPI JSON need the key like /v1 does
    app = FastAPI(title="datawall serve", version=datawall.__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url="/v1/openapi.json")
    app.state.batcher, app.state.model_name, app.state.limits = batcher, name, limits
    app.state.max_prompt_bytes, app.state.max_body_bytes = max_prompt_bytes, max_body_bytes

    # --- errors ------------------------------------------------------------------------------------

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(e, BODIES.get(request.url.path)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code in (404, 405):
            message = f"Invalid URL ({request.method} {request.url.path})."
        else:
            message = str(e.detail)
        return error_response(APIError(e.status_code, message, code="not_found" if e.status_code == 404 else None))

    def too_large(size: int | None) -> JSONResponse:
        why = f"({limits.max_n} prompts of at most {max_prompt:,} tokens; model context {ctx})"
        message = (f"The request body is {size:,} bytes; this server reads at most {max_body_bytes:,} bytes {why}."
                   if size is not None else
                   f"The request body passed {max_body_bytes:,} bytes, the most this server reads {why}.")
        return error_response(APIError(413, message, code="request_too_large"))

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, too_large=too_large)  # inside the key check below

    @app.middleware("http")
    async def _auth_and_crashes(request: Request, call_next):
        if api_key is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
                # the key the client sent is never echoed or logged
                return error_response(APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer "
                                                    "KEY' with the key this server was started with.",
                                               code="invalid_api_key"))
        try:
            return await call_next(request)
        except Exception as e:
            # answered here rather than by an Exception handler, which re-raises and makes uvicorn drop the
            # keep-alive connection the client will reuse
            log.exception("internal error on %s %s", request.method, request.url.path)
            return error_response(APIError(500, f"internal server error ({type(e).__name__})", kind="server_error"))

    # --- validation --------------------------------------------------------------------------------

    def check_common(req: SamplingRequest) -> None:
        if req.model != name:
            raise APIError(404, f"The model '{req.model}' does not exist; this server serves '{name}'.",
                           param="model", code="model_not_found")
        if req.stream:
            raise APIError(400, "stream=true is not supported by datawall serve; send stream=false.",
                           param="stream", code="unsupported_parameter")
        for param in ("presence_penalty", "frequency_penalty"):
            if getattr(req, param):
                raise APIError(400, f"{param} is not supported by datawall serve (send 0).", param=param,
                               code="unsupported_parameter")
        if req.logit_bias:
            raise APIError(400, "logit_bias is not supported by datawall serve.", param="logit_bias",
                           code="unsupported_parameter")
        if req.n > limits.max_n:
            raise APIError(400, f"n={req.n} exceeds this server's limit of {limits.max_n} samples per request "
                                f"(datawall serve --max-n).", param="n", code="invalid_value")
        if len(req.stop_list()) > MAX_STOP:
            raise APIError(400, f"stop: at most {MAX_STOP} stop strings, got {len(req.stop_list())}.",
                           param="stop", code="invalid_value")

    def check_size(text: str, param: str) -> None:
        """Refuse a text prompt by its UTF-8 length (cheap) before anything tokenizes it."""
        try:  # the body limit bounds the text, so encoding it to count is cheap (a millisecond for a megabyte)
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as e:  # JSON can carry lone surrogates ("\ud800"); tokenizers raise TypeError
            raise APIError(400, f"{param}: not valid Unicode (lone surrogate {text[e.start]!r} at character "
                                f"{e.start}).", param=param, code="invalid_value") from None
        if size > max_prompt_bytes:
            raise APIError(400, f"{param} is {size:,} bytes; this server accepts at most {max_prompt_bytes:,} "
                                f"bytes for a prompt of at most {max_prompt} tokens (checked before tokenizing).",
                           param=param, code="context_length_exceeded")

    def encode(text: str, param: str) -> list[int]:
        """Token ids of a text prompt, bos first; refused by its byte length before it is tokenized."""
        check_size(text, param)
        try:
            ids = tok.encode(text)
        except DatawallError as e:
            raise APIError(400, f"{param}: {str(e).removeprefix('tokenizer: ')}.", param=param,
                           code="invalid_value") from None
        return tok.with_bos(ids)

    def with_bos(ids: list[int], param: str) -> list[int]:
        bad = [i for i in ids if not 0 <= i < tok.vocab_size]
        if bad:
            raise APIError(400, f"{param}: token id {bad[0]} is outside the vocabulary (0..{tok.vocab_size - 1}).",
                           param=param, code="invalid_value")
        return tok.with_bos(ids)

    def budget(prompts: list[list[int]], requested: int | None, default: int, param: str) -> int:
        """Check prompt lengths against the limits and return the max_tokens to use."""
        longest = max(len(p) for p in prompts)
        if longest > max_prompt:
            raise APIError(400, f"The prompt is {longest} tokens (bos included); this server accepts at most "
                                f"{max_prompt} (datawall serve --max-prompt-tokens, and the model's context of "
                                f"{ctx}).", param=param, code="context_length_exceeded")
        if requested is None:
            return min(default, limits.max_tokens, ctx - longest)
        if requested > limits.max_tokens:
            raise APIError(400, f"max_tokens={requested} exceeds this server's limit of {limits.max_tokens} "
                                f"(datawall serve --max-tokens).", param="max_tokens", code="invalid_value")
        if longest + requested > ctx:
            raise APIError(400, f"This model's maximum context length is {ctx} tokens. However, you requested "
                                f"{longest + requested} tokens ({longest} in the prompt, {requested} in the "
                                f"completion). Please reduce the prompt or max_tokens.", param="max_tokens",
                           code="context_length_exceeded")
        return requested

    def completion_prompts(raw: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        """Token ids (bos first) of each prompt of a completions request (run on a worker thread)."""
        if isinstance(raw, str):
            return [encode(raw, "prompt")]
        if raw and all(isinstance(x, int) for x in raw):
            return [with_bos(list(raw), "prompt")]
        if raw:
            for i, x in enumerate(raw):  # every prompt's size first, so no big list is tokenized in vain
                if isinstance(x, str):
                    check_size(x, f"prompt[{i}]")
            return [encode(x, f"prompt[{i}]") if isinstance(x, str) else with_bos(x, f"prompt[{i}]")
                    for i, x in enumerate(raw)]
        raise APIError(400, "prompt: an empty list has nothing to complete.", param="prompt", code="invalid_value")

    async def run(request: Request, req: SamplingRequest, prompts: list[list[int]], max_tokens: int, top: int
                  ) -> list[Choice]:
        if len(prompts) * req.n > limits.max_n:
            raise APIError(400, f"{len(prompts)} prompts x n={req.n} is {len(prompts) * req.n} samples; this "
                                f"server's limit is {limits.max_n} per request (datawall serve --max-n).",
                           param="prompt", code="invalid_value")
        if batcher.pending >= limits.max_pending:
            raise APIError(429, f"Server busy: {batcher.pending} requests are queued; retry later.",
                           kind="rate_limit_error", code="rate_limit_exceeded")
        params = SamplingParams(max_tokens, req.temperature, req.top_p, tuple(req.stop_list()), req.seed)
        job = asyncio.ensure_future(batcher.submit(prompts, req.n, params, top))
        gone = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # the client left (or this handler was cancelled): the batcher drops the job's rows
            gone.cancel()
            left = not job.done()
            if left:
                job.cancel()
        if left:
            log.info("client went away: request cancelled (%d rows)", len(prompts) * req.n)
            raise APIError(499, "The client closed the connection; the request was cancelled.", code="cancelled")
        try:
            return job.result()
        except DatawallError as e:
            raise APIError(400, str(e)) from None

    def usage(prompts: list[list[int]], choices: list[Choice]) -> Usage:
        prompt = sum(len(p) for p in prompts)  # once per prompt, however many samples share its prefill
        completion = sum(c.sample.completion_tokens for c in choices)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    def token_text(i: int) -> str:
        return tok.id_to_token(i) if tok.is_special(i) else tok.decode([i])

    # --- routes ------------------------------------------------------------------------------------

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi(), name))

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=name, created=created)])

    @app.get("/v1/models/{model_id:path}")
    async def model_card(model_id: str) -> ModelCard:
        if model_id != name:
            raise APIError(404, f"The model '{model_id}' does not exist; this server serves '{name}'.",
                           param="model", code="model_not_found")
        return ModelCard(id=name, created=created)

    @app.get("/v1/stats")
    async def stats() -> dict:
        """datawall extension: how the batcher grouped requests so far, and the limits in force."""
        return {**batcher.stats, "pending": batcher.pending, "model": name, "context": ctx,
                "limits": asdict(limits) | {"max_prompt_tokens": max_prompt, "max_prompt_bytes": max_prompt_bytes,
                                            "max_body_bytes": max_body_bytes}}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> CompletionResponse:
        check_common(req)
        if req.echo:
            raise APIError(400, "echo=true is not supported by datawall serve.", param="echo",
                           code="unsupported_parameter")
        if req.suffix:
            raise APIError(400, "suffix is not supported by datawall serve.", param="suffix",
                           code="unsupported_parameter")
        if req.best_of not in (None, 1):
            raise APIError(400, "best_of is not supported by datawall serve (ask for n samples and pick).",
                           param="best_of", code="unsupported_parameter")
        prompts = await run_in_threadpool(completion_prompts, req.prompt)  # tokenizing never blocks the loop
        max_tokens = budget(prompts, req.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS, "prompt")
        k = req.logprobs
        choices = await run(request, req, prompts, max_tokens, k or 0)
        out = []
        for index, c in enumerate(choices):
            logprobs = None
            if k is not None:
                tokens = [token_text(i) for i in c.sample.token_ids]
                # offsets into prompt + completion text, where special tokens take no characters
                widths = [len(tok.decode([i])) for i in c.sample.token_ids]
                start = len(tok.decode(prompts[index // req.n]))
                offsets = [start + sum(widths[:j]) for j in range(len(widths))]
                top = [{token_text(i): lp for i, lp in t} for t in c.top] if c.top is not None else None
                logprobs = CompletionLogprobs(tokens=tokens, token_logprobs=c.sample.logprobs, top_logprobs=top,
                                              text_offset=offsets)
            out.append(CompletionChoice(text=c.sample.text, index=index, logprobs=logprobs,
                                        finish_reason=c.sample.finish_reason))
        return CompletionResponse(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=name, choices=out,
                                  usage=usage(prompts, choices), system_fingerprint=fingerprint)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> ChatCompletionResponse:
        check_common(req)
        if req.tools:
            raise APIError(400, "tools are not supported by datawall serve.", param="tools",
                           code="unsupported_parameter")
        if req.response_format and req.response_format.get("type", "text") != "text":
            raise APIError(400, "response_format: only {'type': 'text'} is supported.", param="response_format",
                           code="unsupported_parameter")
        if req.top_logprobs is not None and not req.logprobs:
            raise APIError(400, "top_logprobs needs logprobs=true.", param="top_logprobs", code="invalid_value")
        try:
            if tok.chat_template is None:
                prompts = [await run_in_threadpool(encode, render(req.messages), "messages")]
            else:  # the checkpoint's own template (an instruct model): its turn tokens, as transformers renders
                prompts = [await run_in_threadpool(tok.encode_chat, as_dicts(req.messages))]
        except (ChatTemplateError, DatawallError) as e:
            raise APIError(400, str(e), param="messages", code="invalid_value") from None
        requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        max_tokens = budget(prompts, requested, limits.max_tokens, "messages")
        top = req.top_logprobs or 0
        choices = await run(request, req, prompts, max_tokens, top)
        out = []
        for index, c in enumerate(choices):
            logprobs = None
            if req.logprobs:
                content = []
                for j, (i, lp) in enumerate(zip(c.sample.token_ids, c.sample.logprobs, strict=True)):
                    alts = [TopLogprob(token=(t := token_text(a)), logprob=v, bytes=list(t.encode()))
                            for a, v in (c.top[j] if c.top is not None else [])]
                    t = token_text(i)
                    content.append(TokenLogprob(token=t, logprob=lp, bytes=list(t.encode()), top_logprobs=alts))
                logprobs = ChoiceLogprobs(content=content)
            out.append(ChatChoice(index=index, message=AssistantMessage(content=c.sample.text), logprobs=logprobs,
                                  finish_reason=c.sample.finish_reason))
        return ChatCompletionResponse(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=name,
                                      choices=out, usage=usage(prompts, choices), system_fingerprint=fingerprint)

    return app


BODIES: dict[str, type[SamplingRequest]] = {"/v1/completions": CompletionRequest,
                                            "/v1/chat/completions": ChatCompletionRequest}


async def disconnected(request: Request) -> None:
    """Return once the client has closed the connection (the body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def validation_error(e: RequestValidationError, body: type[SamplingRequest] | None = None) -> APIError:
    """OpenAI-style 400 naming the first invalid parameter of a request body (of model `body`, when known)."""
    err = e.errors()[0]
    param = _param(err.get("loc", ()))
    if err.get("type") == "json_invalid":
        return APIError(400, "The request body is not valid JSON.", code="invalid_json")
    if err.get("type") == "missing" and param is None:  # no body at all (or JSON null)
        required = [f for f, info in body.model_fields.items() if info.is_required()] if body else []
        if not required:
            return APIError(400, "The request body is empty: send a JSON object.", code="missing_required_parameter")
        names = " and ".join(f"'{f}'" for f in required)
        return APIError(400, f"Missing required parameter: '{required[0]}' (the request body is empty; send a JSON "
                             f"object with {names}).", param=required[0], code="missing_required_parameter")
    if err.get("type") == "missing":
        return APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if param is None:
        return APIError(400, f"Invalid request body: {err.get('msg')}.", code="invalid_value")
    return APIError(400, f"Invalid value for '{param}': {err.get('msg')} (got {err.get('input')!r}).", param=param,
                    code="invalid_value")


_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|list|dict)(\[.*\])?$|\[")


def _param(loc: tuple) -> str | None:
    """'messages[0].content' from pydantic's ('body', 'messages', 0, 'content', 'str'): union member tags dropped."""
    parts: list[str] = []
    for x in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(x, int) and parts:
            parts[-1] += f"[{x}]"
        elif not _TYPE_TAG.search(str(x)):
            parts.append(str(x))
    return ".".join(parts) or None
