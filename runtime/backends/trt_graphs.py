"""CUDA graphs of the decoder's decode step, one per shape bucket (see trt_buckets.py).

A captured graph fixes the shapes, the buffer addresses and the execution context it was
captured with, so every bucket owns a context. Capture rules (TensorRT + CUDA):
- enqueue once with the final shapes and addresses before capturing, so TensorRT's
  shape-dependent setup (which may allocate or synchronize) happens outside the capture;
- capture and replay on the same non-default stream.
Graphs are captured lazily, when a bucket is first needed, up to `max_graphs`; a bucket whose
capture fails runs eagerly from then on (logged once), it never fails the step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgevlm.runtime.backends.trt_engine import Context, LoadedEngine

log = logging.getLogger("edgevlm.runtime")

Bucket = tuple[int, int]


@dataclass(slots=True)
class CapturedStep:
    context: Context
    graph: Any  # torch.cuda.CUDAGraph

    def replay(self) -> None:
        """Launch on the current stream (the backend's)."""
        self.graph.replay()


class DecodeGraphs:
    def __init__(self, engine: LoadedEngine, profile_index: int, stream: Any, max_graphs: int) -> None:
        self.engine = engine
        self.profile_index = profile_index
        self.stream = stream
        self.max_graphs = max_graphs
        self._graphs: dict[Bucket, CapturedStep] = {}
        self._failed: set[Bucket] = set()

    def __len__(self) -> int:
        return len(self._graphs)

    def get(self, bucket: Bucket, bind: Callable[[Context], None]) -> CapturedStep | None:
        """The bucket's graph, captured now if needed; None means run this step eagerly."""
        if bucket in self._graphs:
            return self._graphs[bucket]
        if bucket in self._failed or len(self._graphs) >= self.max_graphs:
            return None
        try:
            self._graphs[bucket] = self._capture(bind)
        except Exception as exc:  # capture is an optimisation: fall back to eager, once per bucket
            log.warning("CUDA graph capture failed for decode bucket %s, running it eagerly: %s", bucket, exc)
            self._failed.add(bucket)
            return None
        return self._graphs[bucket]

    def _capture(self, bind: Callable[[Context], None]) -> CapturedStep:
        import torch

        handle = self.stream.cuda_stream
        context = self.engine.context(self.profile_index, handle)
        bind(context)
        context.run(handle)
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            context.run(handle)
        return CapturedStep(context, graph)

    def clear(self) -> None:
        """Drop every graph (the cache they point into is being replaced)."""
        self._graphs.clear()
        self._failed.clear()
