"""The ``format=pt2`` backend of :class:`pruning.deploy.Controller`: an AOTInductor package behind the small
``run(output_names, inputs)`` interface of an ``onnxruntime.InferenceSession``.

A package (``policy.pt2`` / ``planner.pt2``, :func:`pruning.study.export.export_pt2`) is compiled C++ that
torch loads with ``torch._inductor.aoti_load_package``; it needs libtorch (the ``torch`` wheel) but none of the
training stack. Its inputs are positional, in the order of ``controller.json``'s ``policy_inputs`` /
``planner_inputs``; numpy arrays are handed over without a copy (``torch.from_numpy``). The kernels use torch's
intra-op thread pool, which is process-wide: loading sets ``torch.set_num_threads(num_threads)`` (0: torch's
default is left alone).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class Pt2Session:
    """``Pt2Session(path, input_names, output_names, num_threads).run(names, {name: array})`` -> arrays."""

    def __init__(self, path: Path, input_names: list[str], output_names: list[str], num_threads: int = 1):
        if num_threads > 0:  # 0: torch's default (as onnxruntime's default for 0)
            torch.set_num_threads(num_threads)
        self.runner = torch._inductor.aoti_load_package(str(path))
        self.input_names, self.output_names = list(input_names), list(output_names)

    def run(self, names: list[str] | None, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in self.input_names]
        with torch.no_grad():
            out = self.runner(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        by_name = dict(zip(self.output_names, out))
        return [by_name[n].numpy() for n in (names or self.output_names)]
