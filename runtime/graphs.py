"""CUDA graphs for the denoiser.

At 1024px one SANA-0.6B forward is ~1,100 small kernels; on a fast GPU launching them costs as
much as running them. Capturing the forward once per input shape and replaying it removes that
overhead. Inputs are copied into fixed buffers before each replay; the output is copied out.
If capture fails for a model, the engine falls back to plain calls and says so in the log.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

Forward = Callable[..., torch.Tensor]


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]
    output: torch.Tensor


class GraphedForward:
    """Replays a captured `forward(**tensors)` for each distinct set of input shapes."""

    def __init__(self, forward: Forward, capacity: int = 3, warmup: int = 2) -> None:
        self.forward = forward
        self.capacity = capacity
        self.warmup = warmup
        self.failed = False
        self._graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        self._pool = None

    @staticmethod
    def _key(tensors: dict[str, torch.Tensor]) -> tuple:
        return tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(tensors.items()))

    def _capture(self, tensors: dict[str, torch.Tensor]) -> _Captured:
        static = {k: v.clone() for k, v in tensors.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(self.warmup):
                self.forward(**static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._pool), torch.inference_mode():
            output = self.forward(**static)
        return _Captured(graph, static, output)

    def __call__(self, **tensors: torch.Tensor) -> torch.Tensor:
        if self.failed:
            return self.forward(**tensors)
        key = self._key(tensors)
        captured = self._graphs.get(key)
        if captured is None:
            try:
                captured = self._capture(tensors)
            except torch.OutOfMemoryError:
                self._graphs.clear()
                raise
            except (RuntimeError, torch.cuda.CudaError) as exc:  # fall back, never fail
                log.warning("CUDA graph capture failed (%s); running without graphs", exc)
                self.failed = True
                self._graphs.clear()
                return self.forward(**tensors)
            self._graphs[key] = captured
            while len(self._graphs) > self.capacity:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        for name, value in tensors.items():
            captured.inputs[name].copy_(value)
        captured.graph.replay()
        return captured.output.clone()

    def clear(self) -> None:
        self._graphs.clear()
        self._pool = None
