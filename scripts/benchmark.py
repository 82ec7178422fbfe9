#!/usr/bin/env python
"""Side-by-side benchmark of the distillation losses: this package vs the original formula vs PyTorch.

For every case it measures the median forward+backward wall time over repeated runs and the extra peak
memory of the first run, for

* ``ours``: this package's public operators (``pred_distill``, ``layer_distill``, ``att_distill``,
  ``functional.kl_div`` / ``attention_kl`` / ``relation_kl``),
* ``original``: the original Tianshu/Dubhe formula composed from OneFlow ops
  (``-(softmax(t/T) * log(softmax(s/T))).mean()``, ``square(a - b).mean()``,
  ``where(x <= -100, zeros_like(x), x)``); for the losses that the original toolkit does not have
  (``kl_div``, ``attention_kl``, ``relation_kl``) the plain OneFlow formula of their definition
  (``log_softmax``/``softmax`` composed, an additive ``-1e30`` key mask; see :func:`_plain_losses`); for
  ``fused_linear_kl`` (``knowledge_distill_util.fused_linear_distill_loss``) the logits built whole,
  ``kl_div(hidden @ weight.T + bias, teacher)`` with this package's ``kl_div``,
* ``torch``: the PyTorch equivalent (TextBrewer/TinyBERT style) in a separate interpreter that has
  ``torch`` (``--torch-python``; skipped with a note when none is found),

plus one training step (forward, backward, SGD update with lr 0) of this package: ``graph_ms`` inside
``nn.Graph``, ``eager_step_ms`` in eager mode with the usual ``optimizer.zero_grad()`` (gradients zeroed
and accumulated into, as the graph does), ``eager_step_none_ms`` in eager mode with
``zero_grad(set_to_none=True)`` (the gradient tensor is handed over without accumulation).

Every (implementation, case) runs in a fresh process so that allocator caches do not leak from one
measurement into another (``--quick`` shares one process per implementation to stay fast); the
implementations alternate case by case. ``--rounds N`` repeats the whole measurement N times and keeps
each implementation's best median, which filters out other jobs on a shared machine. Peak memory
is the growth of the process's resident set (``VmHWM`` after resetting it, minus ``VmRSS`` with the
inputs allocated) on CPU; on CUDA, PyTorch reports ``max_memory_allocated`` and OneFlow 0.9 has no
memory statistics API (null).

Usage::

    .venv/bin/python scripts/benchmark.py                 # full table (about 2-3 minutes on 2 cores)
    .venv/bin/python scripts/benchmark.py --quick         # tiny shapes, a smoke test
    .venv/bin/python scripts/benchmark.py --json out.json --device cuda
    .venv/bin/python scripts/benchmark.py --e2e --torch-python PY   # one KD training step vs PyTorch
                                                                     # (scripts/_e2e_benchmark.py)
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_PREFIX = "BENCHMARK-RESULT "
STEP_MODES = ("graph", "eager_step", "eager_step_none")
MASK_THRESHOLD = -100.0
PAD_VALUE = -10000.0

#: case name, shape label, kind, parameters
FULL_CASES: List[Dict] = [
    {"case": "soft_ce", "shape": "[32, 2]", "kind": "soft_ce", "dims": [32, 2]},
    {"case": "soft_ce", "shape": "[1024, 30522]", "kind": "soft_ce", "dims": [1024, 30522]},
    {"case": "soft_ce", "shape": "[8, 128, 30522]", "kind": "soft_ce", "dims": [8, 128, 30522]},
    {"case": "layer_distill", "shape": "5 of [32, 128, 768] vs 13", "kind": "layer",
     "dims": [32, 128, 768], "student_layers": 4, "teacher_layers": 12},
    {"case": "att_distill", "shape": "4 of [32, 12, 128, 128] vs 12", "kind": "att",
     "dims": [32, 12, 128, 128], "student_layers": 4, "teacher_layers": 12},
    {"case": "kl_div", "shape": "[1024, 30522]", "kind": "kl_div", "dims": [1024, 30522]},
    {"case": "attention_kl", "shape": "[32, 12, 128, 128] masked", "kind": "attention_kl",
     "dims": [32, 12, 128, 128]},
    {"case": "relation_kl", "shape": "[32, 128, 768] R=12 masked", "kind": "relation_kl",
     "dims": [32, 128, 768], "relation_heads": 12},
    # the kernel routes of _kernel_routes(): what functional.kl_div / relation_kl give once they call them
    {"case": "kl_div:kernel", "shape": "[1024, 30522]", "kind": "kl_div", "dims": [1024, 30522], "route": "kernel"},
    {"case": "relation_kl:kernel", "shape": "[32, 128, 768] R=12 masked", "kind": "relation_kl",
     "dims": [32, 128, 768], "relation_heads": 12, "route": "kernel"},
    # fused linear + KL (knowledge_distill_util.fused_linear_distill_loss) vs kl_div(hidden @ weight.T + bias, teacher):
    # dims [N, H, V]; the teacher's logits [N, V] are an input of both
    {"case": "fused_linear_kl", "shape": "N=4096 H=384 V=30522", "kind": "fused_linear", "dims": [4096, 384, 30522]},
    {"case": "fused_linear_kl", "shape": "N=4096 H=768 V=30522", "kind": "fused_linear", "dims": [4096, 768, 30522]},
    {"case": "fused_linear_kl", "shape": "N=512 H=384 V=151936", "kind": "fused_linear",
     "dims": [512, 384, 151936]},
    {"case": "fused_linear_kl", "shape": "N=512 H=768 V=151936", "kind": "fused_linear",
     "dims": [512, 768, 151936]},
    {"case": "fused_linear_kl", "shape": "N=4096 H=384 V=30522 c=274", "kind": "fused_linear",
     "dims": [4096, 384, 30522], "chunk_size": 274},  # 32 MiB chunks: less memory, more time
]
QUICK_CASES: List[Dict] = [
    {"case": "soft_ce", "shape": "[32, 2]", "kind": "soft_ce", "dims": [32, 2]},
    {"case": "soft_ce", "shape": "[4, 8, 300]", "kind": "soft_ce", "dims": [4, 8, 300]},
    {"case": "layer_distill", "shape": "3 of [2, 8, 16] vs 5", "kind": "layer",
     "dims": [2, 8, 16], "student_layers": 2, "teacher_layers": 4},
    {"case": "att_distill", "shape": "2 of [2, 2, 8, 8] vs 4", "kind": "att",
     "dims": [2, 2, 8, 8], "student_layers": 2, "teacher_layers": 4},
    {"case": "kl_div", "shape": "[4, 8, 300]", "kind": "kl_div", "dims": [4, 8, 300]},
    {"case": "attention_kl", "shape": "[2, 2, 8, 8] masked", "kind": "attention_kl", "dims": [2, 2, 8, 8]},
    {"case": "relation_kl", "shape": "[2, 8, 16] R=2 masked", "kind": "relation_kl", "dims": [2, 8, 16],
     "relation_heads": 2},
    {"case": "kl_div:kernel", "shape": "[4, 8, 300]", "kind": "kl_div", "dims": [4, 8, 300], "route": "kernel"},
    {"case": "relation_kl:kernel", "shape": "[2, 8, 16] R=2 masked", "kind": "relation_kl", "dims": [2, 8, 16],
     "relation_heads": 2, "route": "kernel"},
]
COLUMNS = [
    ("case", "case", 18), ("shape", "shape", 30), ("ours_ms", "ours ms", 9), ("original_ms", "orig ms", 9),
    ("torch_ms", "torch ms", 9), ("speedup_vs_original", "speedup", 8), ("ours_peak_mb", "ours MB", 9),
    ("original_peak_mb", "orig MB", 9), ("torch_peak_mb", "torch MB", 9), ("memory_ratio", "mem ratio", 9),
    ("graph_ms", "graph ms", 9), ("eager_step_ms", "step ms", 9), ("eager_step_none_ms", "step0 ms", 9),
]


# ---------------------------------------------------------------------------------------------------
# worker side: runs inside the measured process (OneFlow or PyTorch imported only here)
# ---------------------------------------------------------------------------------------------------


def _status_mb(field: str) -> Optional[float]:
    try:
        with open("/proc/self/status") as f:
            match = re.search(field + r":\s+(\d+) kB", f.read())
    except OSError:
        return None
    return int(match.group(1)) / 1024.0 if match else None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Backend:
    """What the timing loop needs from a framework: tensors, sync, memory statistics."""

    def __init__(self, framework: str, device: str, torch_threads: Optional[int] = None):
        self.framework, self.device = framework, device
        if framework == "torch":
            import torch

            if torch_threads:
                torch.set_num_threads(torch_threads)
            self.lib = torch
        else:
            os.environ.setdefault("GLOG_minloglevel", "3")
            import knowledge_distill_util  # noqa: F401  (first: it picks OpenBLAS's kernels before OneFlow loads)
            import oneflow

            self.lib = oneflow

    def randn(self, dims, requires_grad=False, scale=1.0):
        x = self.lib.randn(*dims, device=self.device) * scale
        return x.requires_grad_() if requires_grad else x

    def pad_mask(self, batch, length):
        """Additive attention mask ``[B, 1, 1, L]``: the last quarter of the keys are padding."""
        mask = self.lib.zeros(batch, 1, 1, length, device=self.device)
        mask[:, :, :, length - length // 4:] = PAD_VALUE
        return mask

    def key_mask(self, batch, length):
        """0/1 mask ``[B, L]``: the last quarter of the positions are padding."""
        mask = self.lib.ones(batch, length, device=self.device)
        mask[:, length - length // 4:] = 0.0
        return mask

    def sync(self):
        if self.framework == "torch":
            if self.device.startswith("cuda"):
                self.lib.cuda.synchronize()
        else:
            self.lib._oneflow_internal.eager.Sync()
            if self.device.startswith("cuda"):
                self.lib.cuda.synchronize()

    def cuda_peak_start(self):
        if self.framework == "torch":
            self.lib.cuda.reset_peak_memory_stats()
            return self.lib.cuda.memory_allocated()
        return None

    def cuda_peak_mb(self, start):
        if self.framework == "torch":
            return (self.lib.cuda.max_memory_allocated() - start) / 2 ** 20
        return None  # OneFlow 0.9 exposes no CUDA memory statistics


def _inputs(backend: _Backend, spec: Dict, small: bool = False):
    """``(student_tensors, teacher_tensors)`` for a case; ``small`` gives a warm-up-sized copy."""
    dims = list(spec["dims"])
    if small:
        dims[0] = 1
    if spec["kind"] in ("soft_ce", "kl_div"):
        return [backend.randn(dims, True, 3.0)], [backend.randn(dims, False, 3.0)]
    if spec["kind"] == "fused_linear":  # student: hidden [N, H], weight [V, H], bias [V]; teacher: logits [N, V]
        rows, width, vocab = dims

        def randn(shape, requires_grad, scale):
            """Scaled in place: a freed temporary as large as the teacher's logits would stay in OneFlow's
            allocator cache and hide up to that much of the measured peak."""
            x = backend.lib.randn(*shape, device=backend.device).mul_(scale)
            return x.requires_grad_() if requires_grad else x

        return ([randn([rows, width], True, 1.0), randn([vocab, width], True, width ** -0.5),
                 randn([vocab], True, 1.0)], [randn([rows, vocab], False, 3.0)])
    if spec["kind"] in ("attention_kl", "relation_kl"):  # teacher list: [teacher, 0/1 mask [B, L]]
        return [backend.randn(dims, True)], [backend.randn(dims), backend.key_mask(dims[0], dims[-2])]
    count_s, count_t = spec["student_layers"], spec["teacher_layers"]
    if spec["kind"] == "layer":
        return ([backend.randn(dims, True) for _ in range(count_s + 1)],
                [backend.randn(dims) for _ in range(count_t + 1)])
    mask = backend.pad_mask(dims[0], dims[-1])
    student = [(backend.randn(dims) + mask).requires_grad_() for _ in range(count_s)]
    return student, [backend.randn(dims) + mask for _ in range(count_t)]


def _hidden_pairs(count_s: int, count_t: int):
    """The original toolkit's uniform map, written out as the original code does (this is the baseline
    being measured; tests/test_benchmark_smoke.py checks it against functional.hidden_layer_map)."""
    k = count_t // count_s
    return [(i, i * k) for i in range(count_s + 1)]


def _attention_pairs(count_s: int, count_t: int):
    """The original's attention map (checked against functional.attention_layer_map likewise)."""
    k = count_t // count_s
    return [(i, i * k + k - 1) for i in range(count_s)]


def _plain_losses(lib, F, spec: Dict):
    """The plain formulas of the new losses written with ``lib`` (OneFlow or PyTorch) and its functional
    module ``F``: what a user would write without this package (the ``original`` column for them).

    * ``kl_div``: ``sum(p_t * (log_softmax(t) - log_softmax(s))) / N`` (``batchmean``, T = 1),
    * ``attention_kl``: row KL of ``softmax(x + bias)`` with ``bias = (m - 1) * 1e30`` on the keys, averaged
      over the valid query rows of every head,
    * ``relation_kl``: the same on the relation scores ``x_r x_r^T / sqrt(d)`` of ``R`` heads.
    """
    def row_kl(s, t):
        log_p_t = F.log_softmax(t, dim=-1)
        return (F.softmax(t, dim=-1) * (log_p_t - F.log_softmax(s, dim=-1))).sum(dim=-1)

    def attention(s, t, mask):
        batch, heads, length = s.shape[0], s.shape[1], s.shape[-1]
        bias = ((mask - 1.0) * 1e30).reshape(batch, 1, 1, length)
        rows = row_kl(s + bias, t + bias) * mask.reshape(batch, 1, length)
        return rows.sum() / (heads * mask.sum())

    def relation_scores(x, heads):
        batch, length, width = x.shape
        d = width // heads
        x = x.reshape(batch, length, heads, d).permute(0, 2, 1, 3)
        return lib.matmul(x, x.transpose(-1, -2)) / d ** 0.5

    kind = spec["kind"]
    if kind == "kl_div":
        return lambda s, t: row_kl(s[0], t[0]).sum() / (s[0].numel() // s[0].shape[-1])
    if kind == "fused_linear":  # batchmean KL of the logits built whole
        return lambda s, t: row_kl(lib.matmul(s[0], s[1].t()) + s[2], t[0]).sum() / s[0].shape[0]
    if kind == "attention_kl":
        return lambda s, t: attention(s[0], t[0], t[1])
    heads = spec["relation_heads"]
    return lambda s, t: attention(relation_scores(s[0], heads), relation_scores(t[0], heads), t[1])


def _kernel_routes(spec: Dict):
    """Hook: ``kl_div`` and ``relation_kl`` routed through the kernels directly, for the ``...:kernel`` rows:
    ``_kernels.kl_div_mean`` (memory-lean soft-CE kernel with the KL row loss) times ``C`` = ``batchmean``,
    and the relation scores of ``_kernels.relation_scores`` through ``functional.attention_kl`` (which is
    what ``relation_kl`` does with its own scores). ``functional`` calls them when these rows and the plain
    rows above agree."""
    from knowledge_distill_util import _kernels, functional

    if spec["kind"] == "kl_div":
        return lambda s, t: _kernels.kl_div_mean(s[0], t[0], 1.0, 1.0) * s[0].shape[-1]
    heads = spec["relation_heads"]
    return lambda s, t: functional.attention_kl(_kernels.relation_scores(s[0], heads),
                                                _kernels.relation_scores(t[0], heads), mask=t[1])


def _our_new_losses(spec: Dict):
    """This package's ``kl_div`` / ``attention_kl`` / ``relation_kl`` (``knowledge_distill_util.functional``)."""
    from knowledge_distill_util import functional

    if spec.get("route") == "kernel":
        return _kernel_routes(spec)
    kind = spec["kind"]
    if kind == "kl_div":
        return lambda s, t: functional.kl_div(s[0], t[0])
    if kind == "fused_linear":
        chunk_size = spec.get("chunk_size")  # None: the default rule
        from knowledge_distill_util import fused_linear_distill_loss

        return lambda s, t: fused_linear_distill_loss(s[0], s[1], s[2], t[0], loss="kl_div", chunk_size=chunk_size)
    if kind == "attention_kl":
        return lambda s, t: functional.attention_kl(s[0], t[0], mask=t[1])
    heads = spec["relation_heads"]
    return lambda s, t: functional.relation_kl(s[0], t[0], num_relation_heads=heads, mask=t[1])


NEW_LOSS_KINDS = ("kl_div", "attention_kl", "relation_kl", "fused_linear")


def _plain_fused_linear(lib):
    """The ``original`` column of the fused rows: the logits built whole, then this package's ``kl_div``
    (batchmean, its memory-lean kernel): what a user of this package writes without the fused kernel."""
    from knowledge_distill_util import functional

    return lambda s, t: functional.kl_div(lib.matmul(s[0], s[1], transpose_b=True) + s[2], t[0])


def _loss_function(impl: str, spec: Dict, backend: _Backend):
    """``loss(student_list, teacher_list) -> scalar`` for one implementation and case kind."""
    kind, lib = spec["kind"], backend.lib
    temperature = 1.0
    if impl == "torch":
        import torch.nn.functional as TF

        if kind in NEW_LOSS_KINDS:
            return _plain_losses(lib, TF, spec)

        def masked(x):
            return lib.where(x <= MASK_THRESHOLD, lib.zeros_like(x), x)

        if kind == "soft_ce":
            return lambda s, t: -(TF.softmax(t[0] / temperature, -1) * TF.log_softmax(s[0] / temperature, -1)).mean()
        if kind == "layer":
            pairs = _hidden_pairs(spec["student_layers"], spec["teacher_layers"])
            return lambda s, t: sum(TF.mse_loss(s[i], t[j]) for i, j in pairs)
        pairs = _attention_pairs(spec["student_layers"], spec["teacher_layers"])
        return lambda s, t: sum(TF.mse_loss(masked(s[i]), masked(t[j])) for i, j in pairs)

    import oneflow.nn.functional as F

    if impl == "original" and kind == "fused_linear":
        return _plain_fused_linear(lib)
    if impl == "original" and kind in NEW_LOSS_KINDS:
        return _plain_losses(lib, F, spec)
    if impl == "original":
        def mse(a, b):
            return lib.square(a - b).mean()

        def masked(x):
            return lib.where(x <= MASK_THRESHOLD, lib.zeros_like(x), x)

        if kind == "soft_ce":
            return lambda s, t: -(
                F.softmax(t[0] / temperature, dim=-1) * lib.log(F.softmax(s[0] / temperature, dim=-1))
            ).mean()
        if kind == "layer":
            pairs = _hidden_pairs(spec["student_layers"], spec["teacher_layers"])
            return lambda s, t: sum(mse(s[i], t[j]) for i, j in pairs)
        pairs = _attention_pairs(spec["student_layers"], spec["teacher_layers"])
        return lambda s, t: sum(mse(masked(s[i]), masked(t[j])) for i, j in pairs)

    if kind in NEW_LOSS_KINDS:
        return _our_new_losses(spec)
    from argparse import Namespace

    from knowledge_distill_util import att_distill, layer_distill, pred_distill

    args = Namespace(temperature=temperature)
    if kind == "soft_ce":
        return lambda s, t: pred_distill(args, s[0], t[0])
    if kind == "layer":
        return lambda s, t: layer_distill(args, s, t)
    return lambda s, t: att_distill(args, s, t)


def _measure_eager(backend: _Backend, spec: Dict, impl: str, repeat: int) -> Dict:
    loss_fn = _loss_function(impl, spec, backend)
    warm_s, warm_t = _inputs(backend, spec, small=True)
    loss_fn(warm_s, warm_t).backward()  # load kernels outside the measurement
    student, teacher = _inputs(backend, spec)
    backend.sync()
    on_cuda = backend.device.startswith("cuda")
    cuda_start = backend.cuda_peak_start() if on_cuda else None
    base = _status_mb("VmRSS")
    can_reset = _reset_peak()
    times = []
    peak = None
    for run in range(repeat + 1):
        for x in student:
            x.grad = None
        start = time.perf_counter()
        loss_fn(student, teacher).backward()
        backend.sync()
        times.append((time.perf_counter() - start) * 1e3)
        if run == 0:
            if on_cuda:
                peak = backend.cuda_peak_mb(cuda_start)
            elif can_reset and base is not None:
                peak = _status_mb("VmHWM") - base
    return {"ms": statistics.median(times[1:]), "peak_mb": peak}


def _measure_step(backend: _Backend, spec: Dict, repeat: int, mode: str) -> Dict:
    """One training step of this package (forward, backward, SGD lr 0) in ``nn.Graph`` or eager.

    ``mode``: ``graph``, ``eager_step`` (``zero_grad()``) or ``eager_step_none`` (``set_to_none=True``).
    """
    flow = backend.lib
    loss_fn = _loss_function("ours", spec, backend)
    student, teacher = _inputs(backend, spec)

    class Student(flow.nn.Module):
        def __init__(self):
            super().__init__()
            for i, x in enumerate(student):
                setattr(self, f"student_{i}", flow.nn.Parameter(x.detach().clone()))

        def forward(self, *teacher_tensors):
            params = [getattr(self, f"student_{i}") for i in range(len(student))]
            return loss_fn(params, list(teacher_tensors))

    model = Student()
    optimizer = flow.optim.SGD(model.parameters(), lr=0.0)
    if mode == "graph":
        class Step(flow.nn.Graph):
            def __init__(self):
                super().__init__()
                self.model = model
                self.add_optimizer(optimizer)

            def build(self, *teacher_tensors):
                loss = self.model(*teacher_tensors)
                loss.backward()
                return loss

        compiled = Step()

        def step():
            return compiled(*teacher)
    else:
        def step():
            optimizer.zero_grad(set_to_none=mode == "eager_step_none")
            loss = model(*teacher)
            loss.backward()
            optimizer.step()
            return loss

    times = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        step()
        backend.sync()
        times.append((time.perf_counter() - start) * 1e3)
    return {"ms": statistics.median(times[1:]), "peak_mb": None}


def run_worker(impl: str, specs: List[Dict], device: str, repeat: int, torch_threads: Optional[int]) -> None:
    backend = _Backend("torch" if impl == "torch" else "oneflow", device, torch_threads)
    for spec in specs:
        if impl in STEP_MODES:
            result = _measure_step(backend, spec, repeat, impl)
        else:
            result = _measure_eager(backend, spec, impl, repeat)
        print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------
# driver side
# ---------------------------------------------------------------------------------------------------


def find_torch_python(requested: Optional[str]) -> Optional[str]:
    """An interpreter that can ``import torch``: ``requested``, else this one, else ``python3``."""
    if requested is not None and requested.lower() in ("", "none"):
        return None
    candidates = [requested] if requested else [sys.executable, "python3"]
    for candidate in candidates:
        try:
            probe = subprocess.run([candidate, "-c", "import torch"], capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return candidate
    return None


WORKER_TRIES = 3  # a worker killed by a signal (OneFlow 0.9's rare graph-runtime segfault) is run again


def _run_once(python: str, impl: str, indices: List[int], args) -> Tuple[int, List[Dict], str]:
    """One measuring process: (its exit code, the results it printed, the tail of its stderr)."""
    command = [python, os.path.abspath(__file__), "--worker", impl, "--cases", ",".join(map(str, indices)),
               "--device", args.device, "--repeat", str(args.repeat)]
    if args.quick:
        command.append("--quick")
    if args.torch_threads:
        command += ["--torch-threads", str(args.torch_threads)]
    env = dict(os.environ, GLOG_minloglevel="3")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return 0, [], f"timed out after {args.timeout} s"
    results = [json.loads(line[len(RESULT_PREFIX):]) for line in done.stdout.splitlines()
               if line.startswith(RESULT_PREFIX)]
    return done.returncode, results, "\n".join(done.stderr.strip().splitlines()[-5:])


def _run(python: str, impl: str, indices: List[int], args) -> List[Optional[Dict]]:
    """The results for ``indices`` (``None`` for those never measured). The cases a worker killed by a
    signal did not reach are measured again in a new process, up to ``WORKER_TRIES`` processes in all."""
    results: List[Dict] = []
    for _ in range(WORKER_TRIES):
        code, new, tail = _run_once(python, impl, indices[len(results):], args)
        results += new
        if len(results) == len(indices):
            return results
        print(f"[benchmark] {impl} failed (exit {code}):\n{tail}", file=sys.stderr)
        if code >= 0:  # an ordinary failure or a timeout: running it again would fail again
            break
    return results + [None] * (len(indices) - len(results))


def _ratio(numerator, denominator) -> Optional[float]:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _best(kept: Optional[Dict], new: Optional[Dict]) -> Optional[Dict]:
    """Across rounds: the lowest median time, and the peak memory of the first round that had one."""
    if kept is None or new is None:
        return kept or new
    best = dict(kept if kept["ms"] <= new["ms"] else new)
    best["peak_mb"] = kept["peak_mb"] if kept["peak_mb"] is not None else new["peak_mb"]
    return best


def selected_cases(args) -> List[int]:
    """Indices into the case list (full or quick) that ``--only`` keeps (all without it)."""
    specs = QUICK_CASES if args.quick else FULL_CASES
    if not args.only:
        return list(range(len(specs)))
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    known = sorted({spec["case"] for spec in specs})
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(f"--only: unknown case name(s) {unknown}; known: {', '.join(known)}")
    return [i for i, spec in enumerate(specs) if spec["case"] in wanted]


def collect(args) -> List[Dict]:
    all_specs = QUICK_CASES if args.quick else FULL_CASES
    chosen = selected_cases(args)
    specs = [all_specs[i] for i in chosen]
    torch_python = find_torch_python(args.torch_python)
    impls = ["ours", "original"] + ([] if args.no_graph else list(STEP_MODES))
    if torch_python:
        impls.append("torch")
    measured: Dict[str, List[Optional[Dict]]] = {impl: [None] * len(specs) for impl in impls}
    for _ in range(args.rounds):
        if args.quick:  # one process per implementation
            batches = [(impl, list(range(len(specs)))) for impl in impls]
        else:  # a fresh process per measurement, implementations alternating case by case
            batches = [(impl, [i]) for i in range(len(specs)) for impl in impls]
        for impl, indices in batches:
            python = torch_python if impl == "torch" else sys.executable
            for i, result in zip(indices, _run(python, impl, [chosen[i] for i in indices], args)):
                measured[impl][i] = _best(measured[impl][i], result)
    rows = []
    for i, spec in enumerate(specs):
        def get(impl, key):
            result = measured.get(impl, [None] * len(specs))[i]
            return None if result is None else result[key]

        row = {
            "case": spec["case"], "shape": spec["shape"], "device": args.device,
            "ours_ms": get("ours", "ms"), "original_ms": get("original", "ms"), "torch_ms": get("torch", "ms"),
            "ours_peak_mb": get("ours", "peak_mb"), "original_peak_mb": get("original", "peak_mb"),
            "torch_peak_mb": get("torch", "peak_mb"),
            "graph_ms": get("graph", "ms"), "eager_step_ms": get("eager_step", "ms"),
            "eager_step_none_ms": get("eager_step_none", "ms"),
        }
        row["speedup_vs_original"] = _ratio(row["original_ms"], row["ours_ms"])
        row["memory_ratio"] = _ratio(row["ours_peak_mb"], row["original_peak_mb"])
        notes = []
        if not torch_python:
            skipped = args.torch_python is not None and args.torch_python.lower() in ("", "none")
            notes.append("torch: skipped (--torch-python none)" if skipped
                         else "torch: no interpreter with PyTorch found (--torch-python)")
        if args.device.startswith("cuda"):
            notes.append("OneFlow 0.9 has no CUDA memory statistics: OneFlow peaks are null")
        row["note"] = "; ".join(notes) or None
        rows.append(row)
    return rows


def format_table(rows: List[Dict]) -> str:
    def cell(value, width):
        if value is None:
            text = "-"
        elif isinstance(value, float):
            text = f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
        else:
            text = str(value)
        return text.rjust(width) if not isinstance(value, str) else text.ljust(width)

    lines = [" ".join(cell(title, width) for _, title, width in COLUMNS)]
    lines.append(" ".join("-" * width for _, _, width in COLUMNS))
    for row in rows:
        lines.append(" ".join(cell(row.get(key), width) for key, _, width in COLUMNS))
    notes = sorted({row["note"] for row in rows if row.get("note")})
    lines += [f"note: {note}" for note in notes]
    return "\n".join(lines)


def default_device() -> str:
    """``cuda`` when OneFlow sees a CUDA device, else ``cpu``."""
    probe = subprocess.run(
        [sys.executable, "-c", "import oneflow; print(oneflow.cuda.is_available())"],
        capture_output=True, text=True, env=dict(os.environ, GLOG_minloglevel="3"), timeout=120,
    )
    return "cuda" if probe.stdout.strip().endswith("True") else "cpu"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write every row to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, few repeats (smoke test)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available, else cpu)")
    parser.add_argument("--repeat", type=int, help="timed runs per measurement after one untimed run "
                        "(default 7, 3 with --quick)")
    parser.add_argument("--torch-python", metavar="PYTHON",
                        help="interpreter with PyTorch for the torch column (default: this one, else "
                             "python3, when it can import torch; 'none' to skip)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure everything this many times, alternating implementations, and keep "
                             "each one's best median (use 3 on a machine shared with other jobs)")
    parser.add_argument("--torch-threads", type=int, metavar="N",
                        help="torch.set_num_threads(N) in the PyTorch process (default: PyTorch's own; "
                             "1 avoids thread wake-up stalls on a busy machine)")
    parser.add_argument("--no-graph", action="store_true", help="skip the training-step columns")
    parser.add_argument("--only", metavar="CASES",
                        help="comma-separated case names to measure (e.g. soft_ce,attention_kl); default all")
    parser.add_argument("--scaling", action="store_true", help="instead: data-parallel training throughput with 1 "
                        "and 2 processes (scripts/benchmark_scaling.py; --json, --quick apply)")
    parser.add_argument("--e2e", action="store_true", help="instead: one KD training step of the default run's "
                        "shapes, eager and graph, vs transformers + the TextBrewer loss on PyTorch with 2 and 1 "
                        "threads (scripts/_e2e_benchmark.py; --json, --quick, --rounds, --torch-python apply)")
    parser.add_argument("--e2e-steps", type=int, help="--e2e: timed steps per measurement (default 5, 2 with --quick)")
    parser.add_argument("--e2e-warmup", type=int, default=2, help="--e2e: untimed steps before them (default 2)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per measuring process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--cases", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 7
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.e2e_steps is None:
        args.e2e_steps = 2 if args.quick else 5
    if args.e2e_steps < 1:
        parser.error(f"--e2e-steps must be at least 1, got {args.e2e_steps}")
    if args.e2e and args.device not in (None, "cpu"):
        parser.error(f"--e2e measures on the CPU only, got --device {args.device}; drop --device")
    if args.e2e_warmup < 1:
        parser.error(f"--e2e-warmup must be at least 1 (the first step compiles the graph), got {args.e2e_warmup}")
    return args


def _e2e(args) -> int:
    """``--e2e``: the end-to-end KD training step table (its own module, scripts/_e2e_benchmark.py)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _e2e_benchmark

    torch_python = find_torch_python(args.torch_python)
    note = None
    if torch_python is None:
        skipped = args.torch_python is not None and args.torch_python.lower() in ("", "none")
        note = ("torch: skipped (--torch-python none)" if skipped
                else "torch: no interpreter with PyTorch found (--torch-python)")
    return _e2e_benchmark.main(args, torch_python, note)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        specs = QUICK_CASES if args.quick else FULL_CASES
        run_worker(args.worker, [specs[int(i)] for i in args.cases.split(",")], args.device or "cpu", args.repeat,
                   args.torch_threads)
        return 0
    if args.scaling:  # the data-parallel scaling table lives in its own module
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from benchmark_scaling import main as scaling

        return scaling([], json_path=args.json, quick=args.quick)
    if args.e2e:
        return _e2e(args)
    if args.device is None:
        args.device = default_device()
    rows = collect(args)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if all(row["ours_ms"] is not None and row["original_ms"] is not None for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
