"""The engine: requests in, one step at a time (schedule -> run -> sample -> emit), events out.

Single-threaded by design: `AsyncEngine` drives it from one background thread; scripts call
`generate()`. `prepare()` touches no engine state, so it may run on any thread.
Failure rule: a bad request fails its own sequence only. Preprocessing errors reject it before
it queues; vision or decoder errors finish it with `finish_reason="error"` (a failed multi-row
decoder call is retried row by row to find the culprit); the loop itself never stops.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevlm.runtime.backends import create_backend
from edgevlm.runtime.backends.base import Backend
from edgevlm.runtime.bundle import Bundle, load_bundle
from edgevlm.runtime.detokenizer import Detokenizer
from edgevlm.runtime.embed_table import EmbedTable
from edgevlm.runtime.image_cache import ImageCache
from edgevlm.runtime.image_encoder import ImageEncoder
from edgevlm.runtime.kv_cache import KVLayout
from edgevlm.runtime.limits import EngineLimits
from edgevlm.runtime.prefix_cache import PrefixCache
from edgevlm.runtime.prefix_reuse import PrefixReuse
from edgevlm.runtime.preprocess import Preprocessor
from edgevlm.runtime.sampling import SamplingState, TokenChoice, sample
from edgevlm.runtime.scheduler import ScheduledBatch, Scheduler, SchedulerConfig
from edgevlm.runtime.sequence import Sequence
from edgevlm.runtime.step_inputs import decoder_step
from edgevlm.runtime.types import (
    EngineOverloaded,
    EngineStats,
    FinishReason,
    GenerationRequest,
    ImagePart,
    RequestRejected,
    StreamEvent,
    TokenLogprob,
    Usage,
)

log = logging.getLogger("edgevlm.runtime")

Event = tuple[Sequence, StreamEvent]


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """A whole answer, for scripts and tests (`Engine.generate`)."""

    request_id: str
    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    usage: Usage
    error: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()


class Engine:
    def __init__(
        self, bundle: Bundle, backend: Backend, preprocessor: Preprocessor, limits: EngineLimits
    ) -> None:
        self.bundle = bundle
        self.backend = backend
        self.preprocessor = preprocessor
        self.limits = limits
        arch = bundle.architecture
        self.max_len = min(limits.max_seq_len or bundle.limits.max_seq_len, bundle.limits.max_seq_len)
        layout = KVLayout.sized(
            num_layers=arch.num_layers, kv_heads=arch.num_kv_heads, head_dim=arch.head_dim,
            dtype=bundle.dtype, max_batch=limits.max_batch or bundle.limits.max_batch, max_len=self.max_len,
            kv_cache_mb=limits.kv_cache_mb, max_kv_tokens=limits.max_kv_tokens,
        )
        self.cache = backend.create_cache(layout)
        config = SchedulerConfig(limits.max_queue, limits.max_prefill_tokens)
        reuse = limits.prefix_cache_mb > 0 and self.cache.supports_prefix_reuse
        self.prefix_cache = PrefixCache(limits.prefix_cache_mb) if reuse else None
        self.prefixes = (PrefixReuse(self.prefix_cache, self.cache, lambda: self.scheduler.prefilling())
                         if self.prefix_cache is not None else None)
        self.scheduler = Scheduler(config, self.cache.table, self.prefixes.admit if self.prefixes else None,
                                   self.prefixes.should_hold if self.prefixes else None)
        self.image_cache = ImageCache(limits.image_cache_mb)
        self.images = ImageEncoder(
            backend, preprocessor, self.image_cache, limits.max_vision_patches, bundle.dtype
        )
        # Memory-mapped: only the rows of the step's tokens are read.
        self.embed_table = EmbedTable.load(bundle.path, bundle.embed_entry)
        self.eos_token_ids = frozenset(bundle.tokens.eos_token_ids)
        self._live: dict[str, Sequence] = {}
        self.num_cancelled = 0

    @classmethod
    def from_bundle(
        cls, path: str | Path, backend: str = "onnxruntime", device: str = "cpu", cpu_form: bool = True, **limits
    ) -> Engine:
        """Load a bundle and build the engine; `limits` are EngineLimits fields. `cpu_form=False`
        makes ONNX Runtime run an int8 bundle's Q/DQ graphs (the TensorRT form) even on the CPU."""
        engine_limits = EngineLimits.from_kwargs(**limits)
        bundle = load_bundle(path, verify_sha256=engine_limits.verify_sha256)
        rows = engine_limits.max_batch or bundle.limits.max_batch
        options = {"cpu_form": cpu_form, "spin": engine_limits.spin_wait} if backend == "onnxruntime" else {}
        runner = create_backend(
            backend, bundle, device=device, threads=engine_limits.threads,
            max_step_tokens=engine_limits.max_prefill_tokens, max_rows=rows, **options,
        )
        preprocessor = Preprocessor.from_dir(bundle.path, bundle.tokens.image_token_id)
        return cls(bundle, runner, preprocessor, engine_limits)

    # -- requests ----------------------------------------------------------------------------
    def prepare(self, request: GenerationRequest) -> Sequence:
        """Tokenize and check a request (RequestRejected if it can never run). Thread-safe."""
        images = sum(1 for m in request.messages for p in m.parts if isinstance(p, ImagePart))
        if images > self.limits.max_images:
            raise RequestRejected(f"{images} images in one request; at most {self.limits.max_images}")
        prompt = self.preprocessor(request.messages)
        if len(prompt) >= self.max_len:
            raise RequestRejected(
                f"the prompt is {len(prompt)} tokens; this engine's context is {self.max_len}"
            )
        params = request.sampling
        decode = self._decode_fn()
        return Sequence(
            request_id=request.request_id,
            prompt=prompt,
            params=params,
            sampling=SamplingState.create(params, prompt.input_ids),
            detokenizer=Detokenizer(decode, params.stop),
            max_tokens=min(params.max_tokens, self.max_len - len(prompt)),
            eos_token_ids=self.eos_token_ids,
        )

    def add(self, seq: Sequence) -> None:
        """Queue a prepared sequence (EngineOverloaded when the queue is full)."""
        if seq.request_id in self._live:
            raise RequestRejected(f"request_id {seq.request_id!r} is already running")
        self.scheduler.add(seq)
        self._live[seq.request_id] = seq

    def add_request(self, request: GenerationRequest) -> Sequence:
        seq = self.prepare(request)
        self.add(seq)
        return seq

    def abort(self, request_id: str, error: str | None = None) -> Event | None:
        """Cancel a request (or fail it, with `error`): its KV row frees now. Returns its final
        event, None if the request is unknown or already finished."""
        seq = self._live.get(request_id)
        if seq is None:
            return None
        if error is not None:
            return self._finish(seq, "error", error)
        self.num_cancelled += 1
        return self._finish(seq, "cancelled")

    def clear_caches(self) -> None:
        """Forget cached image embeddings and prompt prefixes (the next request starts cold)."""
        self.image_cache.clear()
        if self.prefix_cache is not None:
            self.prefix_cache.clear()

    def live_request_ids(self) -> list[str]:
        return list(self._live)

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=self.scheduler.num_running,
            num_waiting=self.scheduler.num_waiting,
            kv_tokens_total=self.cache.layout.total_tokens,
            kv_tokens_used=self.cache.table.tokens_used,
            image_cache_hits=self.image_cache.hits,
            image_cache_misses=self.image_cache.misses,
            num_cancelled=self.num_cancelled,
            prefix_cache_hits=self.prefix_cache.hits if self.prefix_cache else 0,
            prefix_cache_tokens=self.prefix_cache.tokens_reused if self.prefix_cache else 0,
        )

    # -- the step ----------------------------------------------------------------------------
    def step(self) -> list[Event]:
        """Run one scheduled batch; returns the events it produced (possibly none)."""
        batch = self.scheduler.schedule()
        if batch is None:
            return []
        try:
            return self._run(batch)
        except Exception as exc:  # a bug, not a request's fault: fail this batch, keep serving
            log.exception("engine step failed")
            error = f"internal error: {exc}"
            return [self._finish(s, "error", error) for s in batch.seqs if not s.is_finished]

    def _run(self, batch: ScheduledBatch) -> list[Event]:
        if batch.is_prefill and any(s.needs_images for s in batch.seqs):
            failed = self.images.encode(self._vision_batch(batch))
            if failed:
                # Rows move when these free, so this batch is void; the next step reschedules.
                return [self._finish(s, "error", error) for s, error in failed.items()]
        logits, failed = self._forward(batch)
        # Book the new K/V of every good row before any row frees: a release moves rows by the
        # table's lengths, which must already count this step's tokens.
        for seq, count in zip(batch.seqs, batch.num_new, strict=True):
            if seq not in failed:
                seq.num_cached += count
                self.cache.table.advance(seq, count)
        events = [self._finish(s, "error", error) for s, error in failed.items()]
        return events + self._postprocess(batch, logits, failed)

    def _vision_batch(self, batch: ScheduledBatch) -> list[Sequence]:
        """This chunk's sequences that need images, plus other admitted newcomers' while the patch
        budget lasts: fewer, fuller vision calls, with the step's vision work still bounded."""
        chosen = [s for s in batch.seqs if s.needs_images]
        budget = self.limits.max_vision_patches - sum(_patches(s) for s in chosen)
        for seq in self.scheduler.prefilling():
            if seq.needs_images and seq not in chosen and _patches(seq) <= budget:
                chosen.append(seq)
                budget -= _patches(seq)
        return chosen

    def _forward(self, batch: ScheduledBatch) -> tuple[np.ndarray | None, dict[Sequence, str]]:
        """Logits for every row; if the call fails, each row alone, so only failing rows fail.
        # -> [batch, vocab]"""
        try:
            step = decoder_step(batch, self.embed_table, self.bundle.dtype)
            return self.backend.decode(step, self.cache), {}
        except Exception as exc:
            if len(batch.seqs) == 1:
                log.warning("decoder failed for %s: %s", batch.seqs[0].request_id, exc)
                return None, {batch.seqs[0]: f"decoder failed: {exc}"}
        rows: list[np.ndarray | None] = []
        failed: dict[Sequence, str] = {}
        for b, (seq, count) in enumerate(zip(batch.seqs, batch.num_new, strict=True)):
            single = ScheduledBatch(batch.is_prefill, (seq,), batch.first_row + b, (count,))
            logits, errors = self._forward(single)
            rows.append(None if logits is None else logits[0].copy())
            failed.update(errors)
        vocab = next((r.shape[0] for r in rows if r is not None), 1)
        return np.stack([np.full(vocab, np.nan, np.float32) if r is None else r for r in rows]), failed

    def _postprocess(self, batch: ScheduledBatch, logits: np.ndarray | None,
                     failed: dict[Sequence, str]) -> list[Event]:
        picked: list[int] = []
        for b, seq in enumerate(batch.seqs):
            if seq in failed:
                continue
            if batch.is_prefill:
                if seq.prefill_remaining > 0:
                    continue
                self.cache.apply(self.scheduler.prefill_done(seq))
                seq.image_embeds = None
            picked.append(b)
        if not picked or logits is None:
            return []
        seqs = [batch.seqs[b] for b in picked]
        choices = sample(logits[picked], [s.sampling for s in seqs], [s.suppressed_tokens() for s in seqs])
        return [self._emit(seq, choice) for seq, choice in zip(seqs, choices, strict=True)]

    def _emit(self, seq: Sequence, choice: TokenChoice) -> Event:
        token = choice.token_id
        seq.output_ids.append(token)
        seq.sampling.record(token)
        if token in self.eos_token_ids:
            return self._finish(seq, "stop")
        text = seq.detokenizer.add(token)
        logprobs = self._logprobs(choice)
        if seq.detokenizer.stopped:
            return self._finish(seq, "stop", prefix=text, logprobs=logprobs)
        if len(seq.output_ids) >= seq.max_tokens:
            return self._finish(seq, "length", prefix=text, logprobs=logprobs)
        return seq, StreamEvent(text=text, logprobs=logprobs)

    def _finish(self, seq: Sequence, reason: FinishReason, error: str | None = None, prefix: str = "",
                logprobs: tuple[TokenLogprob, ...] = ()) -> Event:
        """End a sequence: flush its text, free its KV row at once, build its last event."""
        text = prefix + ("" if reason in ("error", "cancelled") else seq.detokenizer.finish())
        if reason != "error" and self.prefixes is not None:
            self.prefixes.keep(seq)
        seq.finish(reason, error)
        self.cache.apply(self.scheduler.release(seq))
        self._live.pop(seq.request_id, None)
        usage = Usage(prompt_tokens=seq.num_prompt, completion_tokens=len(seq.output_ids))
        return seq, StreamEvent(text=text, logprobs=logprobs, finish_reason=reason, usage=usage, error=error)

    def _logprobs(self, choice: TokenChoice) -> tuple[TokenLogprob, ...]:
        if choice.logprob is None:
            return ()
        text = self.preprocessor.token_text
        top = tuple((text(i), lp) for i, lp in choice.top)
        return (TokenLogprob(text(choice.token_id), choice.logprob, top),)

    def _decode_fn(self):
        skip = self.limits.skip_special_tokens
        return lambda ids: self.preprocessor.decode(ids, skip_special_tokens=skip)

    # -- blocking use --------------------------------------------------------------------------
    def generate(self, requests: GenerationRequest | Iterable[GenerationRequest]) -> list[GenerationResult]:
        """Run requests to completion (continuous batching); results in request order. Requests
        beyond the queue wait here until there is room; a rejected one gets an error result."""
        pending = [requests] if isinstance(requests, GenerationRequest) else list(requests)
        order = [r.request_id for r in pending]
        pending.reverse()
        texts: dict[str, list[str]] = {rid: [] for rid in order}
        logprobs: dict[str, list[TokenLogprob]] = {rid: [] for rid in order}
        results: dict[str, GenerationResult] = {}
        while pending or self.has_work:
            results.update(self._feed(pending))
            for seq, event in self.step():
                if seq.request_id not in texts:
                    continue  # another caller's request
                texts[seq.request_id].append(event.text)
                logprobs[seq.request_id].extend(event.logprobs)
                if event.finish_reason is not None:
                    assert event.usage is not None, "a final event carries usage"
                    results[seq.request_id] = GenerationResult(
                        seq.request_id, "".join(texts[seq.request_id]), tuple(seq.output_ids),
                        event.finish_reason, event.usage, event.error, tuple(logprobs[seq.request_id]),
                    )
        return [results[rid] for rid in order]

    def _feed(self, pending: list[GenerationRequest]) -> dict[str, GenerationResult]:
        rejected: dict[str, GenerationResult] = {}
        while pending:
            request = pending[-1]
            try:
                self.add_request(request)
            except EngineOverloaded:
                break
            except RequestRejected as exc:
                rejected[request.request_id] = GenerationResult(
                    request.request_id, "", (), "error", Usage(0, 0), error=str(exc)
                )
            pending.pop()
        return rejected

    def close(self) -> None:
        self.backend.close()


def _patches(seq: Sequence) -> int:
    return sum(int(np.prod(spec.grid_thw)) for spec in seq.prompt.images)
