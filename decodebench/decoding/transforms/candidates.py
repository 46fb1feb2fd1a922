"""Sort-free filtering: a `topk(K)` candidate set, an exact per-row check, a fallback for the rest.

The sort-based transforms (top-p, typical, mirostat, ...) follow their references bit for bit, and the
references sort the whole vocabulary. On `[64, 49152]` float32 logits that sort is most of the step
(measured under load on the shared 2-core AVX-512 box: sort 115-270 ms, `topk(1024)` 15-50 ms, one
softmax 7 ms, a float64 softmax 28 ms). Here each transform instead:

1. takes the `K` largest logits per row (`torch.topk`, one call for the batch);
2. bounds, per row, every quantity the reference compares (a cumulative probability, a probability)
   between a lower and an upper value that provably contain the reference's own float result;
3. rounds both bounds the way the reference rounds (monotone), and calls a row `ok` only when both
   bounds give the same decision at every position that matters, the kept set lies inside the
   candidates, and no tie straddles the cut (the reference's unstable sort would pick among tied
   tokens);
4. recomputes the rows that are not `ok` with the full-sort reference (`resolve`).

So the kept set is identical to the full-sort path's on every row, by construction: the fast path
only answers where the answer cannot differ. Why not bisection on the threshold (vLLM, FlashInfer):
each bisection step is a full pass over `[B, V]` (a compare and a masked sum, ~3-5 ms each under
load), 20-30 steps cost as much as the topk, and the final kept set still needs the same exact check
against the reference's cumsum; on a CPU the candidate set wins and its cost does not grow with the
precision asked for.

The reference's arithmetic, as measured on torch 2.13 (tests/decoding/test_sortfree.py checks it):
softmax forms `e_i = exp(x_i - max)` in float32 (float64 for float64 logits), sums them with a
vectorised reduction (at least 8 independent lanes on every CPU build, more on CUDA), and scales by the
rounded reciprocal; `cumsum` accumulates float32 in float64 and half types in float32, rounding every
output once. The bounds below assume exactly this, with every error term taken at its worst case.

Compile-readiness: everything up to `ok` is fixed-shape tensor code (no host reads). `resolve` patches
the failing rows in eager CPU mode (reading `ok` on CPU costs nothing) and, under `torch.compile`, falls
back for the whole batch through `torch.cond`, so the graph has no break.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
from torch import Tensor

NEG_INF = -math.inf
DEFAULT_K = 1024  # candidates per row; real top-p 0.95 nuclei fit in 1024 for ~84% of rows (T = 1)
LANES = 8  # the fewest independent accumulators the reference's softmax sum uses (torch's Vectorized<float>)
_U64 = 2.0**-53


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half an ulp at 1, relative: 2**-24 float32, 2**-53 float64, 2**-11 float16, 2**-8 bfloat16."""
    return {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.float16: 2.0**-11,
            torch.bfloat16: 2.0**-8}[dtype]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the reference's softmax computes in: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


_ACCELERATOR_PATHS: list[bool] = []


def on_host(t: Tensor | torch.device) -> bool:
    """Does `t` (a tensor or a device) live where reading a row's data costs no device round trip (the
    CPU)? The CPU-only paths (row subsets picked by `nonzero`, shortcuts checked per row) ask this rather
    than the device type, so `accelerator_paths` can send a CPU run down an accelerator's paths."""
    device = t.device if isinstance(t, Tensor) else t
    return device.type == "cpu" and not _ACCELERATOR_PATHS


def host_eager(t: Tensor) -> bool:
    """`on_host(t)` and not under `torch.compile`: the paths that pick rows with `nonzero`."""
    return on_host(t) and not _compiling()


@contextlib.contextmanager
def accelerator_paths():
    """While the block runs, CPU tensors take the paths an accelerator takes in eager mode: the full
    sort instead of the candidate check, the race over the whole row, no `nonzero` row subsets. The
    tokens are the same (each CPU shortcut is exact); scripts/step_ops.py counts what an accelerator
    would launch per step this way, on a machine without one."""
    _ACCELERATOR_PATHS.append(True)
    try:
        yield
    finally:
        _ACCELERATOR_PATHS.pop()


def usable(logits: Tensor, k: int) -> bool:
    """Is a `k`-candidate path worth taking: the vocabulary must be larger than the candidates, and the
    per-row fallback must not cost a device sync. On CPU, eager, the check reads one flag of a CPU tensor
    (no device to wait for); compiled, the fallback is one `torch.cond`. An accelerator in eager mode sorts
    (a GPU sort of [64, 49152] costs far less than a host read that stalls the queue)."""
    if _compiling() or on_host(logits):
        return k + 1 < logits.shape[-1] and logits.dim() == 2
    return False


class Candidates:
    """A row's `k` largest logits (`vals`, `ids`, descending) and the float64 softmax terms the bounds
    need: `e` (exp of `x - max` for the candidates), the row's total `s` and the tail's mass `tail`
    (all tokens outside the candidates), `nxt` the `k + 1`-th largest logit (for ties at the edge)."""

    def __init__(self, logits: Tensor, k: int) -> None:
        top = torch.topk(logits, k + 1, dim=-1)
        self.vals, self.ids, self.nxt = top.values[:, :k], top.indices[:, :k], top.values[:, k:]
        self._terms(logits, self.vals[:, :1])

    @classmethod
    def at(cls, logits: Tensor, ids: Tensor) -> "Candidates":
        """The softmax terms of the candidates `ids` `[B, k]`, in the caller's order rather than by logit
        (typical's candidates are the tokens nearest the entropy): `vals` their logits, `nxt` None."""
        c = cls.__new__(cls)
        c.vals, c.ids, c.nxt = logits.gather(1, ids), ids, None
        c._terms(logits, logits.amax(dim=-1, keepdim=True))  # NaN propagates: such a row is never finite
        return c

    def _terms(self, logits: Tensor, top: Tensor) -> None:
        k = self.vals.shape[-1]
        om = compute_dtype(logits.dtype)
        x = logits.to(om)
        self.max = top.to(om)
        self.finite = torch.isfinite(self.max)  # NaN or inf rows: never ok, the reference decides
        shift = torch.where(self.finite, self.max, 0.0)
        # the reference's exp argument, rounded as it rounds it; exp in the compute dtype (within 2 ulps
        # of the true value: counted in softmax_rel_error), summed in float64
        e_all = torch.exp(x - shift)
        self.s = e_all.sum(dim=-1, keepdim=True, dtype=torch.float64)
        self.e = (self.vals.to(om) - shift).double().exp()  # candidates: float64 exp, monotone in the logit
        self.tail = (self.s - self.e.sum(dim=-1, keepdim=True)).clamp(min=0)
        self.v, self.k = logits.shape[-1], k
        self.dtype = logits.dtype

    def absolute_slack(self) -> float:
        """Relative-to-1 slack for the float64 sums (s and tail by subtraction): `4 V` ulps of double."""
        return 4 * self.v * _U64

    def softmax_rel_error(self, mass_rank: Tensor) -> Tensor:
        """`[B, 1]` bound on the relative error of the reference's probabilities against ours.

        The reference's sum of `n` positive terms reduced by `L` lanes in its own order errs by at most
        `u * (sum_i e_i * ceil(rank_i / L) + L * s)`, `rank_i` the number of partial sums term `i` sits
        in; `mass_rank` `[B, 1]` bounds `sum_i p_i * ceil(rank_i / L)`. Add 2u for exp (<= 1 ulp), u for
        the reciprocal and u for the product; and 4u for our own float32 exp in `s`."""
        u = unit_roundoff(compute_dtype(self.dtype))
        rho = u * (mass_rank + LANES + 1)
        return 1.01 * (8 * u + rho) + 16 * self.v * _U64


def round_up_to(x: Tensor, dtype: torch.dtype) -> Tensor:
    """float64 `x` as the smallest float32 (or float64) value >= x; the caller rounds on to half types
    with the reference's own float32 -> half conversion (monotone)."""
    if dtype == torch.float64:
        return x
    f = x.float()
    return torch.where(f.double() < x, torch.nextafter(f, torch.full_like(f, math.inf)), f)


def round_down_to(x: Tensor, dtype: torch.dtype) -> Tensor:
    if dtype == torch.float64:
        return x
    f = x.float()
    return torch.where(f.double() > x, torch.nextafter(f, torch.full_like(f, -math.inf)), f)


def as_reference_output(lo: Tensor, hi: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Bounds on the reference's accumulator `[lo, hi]` (float64) mapped to bounds on its rounded
    output in `dtype`. float32 outputs are rounded from a float64 accumulator directly (as torch's
    cumsum does); half outputs from a float32 accumulator, which we bound outwards first."""
    if dtype in (torch.float32, torch.float64):
        return lo.to(dtype), hi.to(dtype)
    return round_down_to(lo, dtype).to(dtype), round_up_to(hi, dtype).to(dtype)


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def resolve(fast: Tensor, ok: Tensor, slow: Callable[[Tensor], Tensor], slow_all: Callable[[], Tensor]) -> Tensor:
    """`fast` with the rows where `ok` `[B]` is False replaced by the reference.

    Eager on CPU: recompute only those rows (`slow(row_indices)`), found by `nonzero`, whose size the
    CPU knows when the op returns (no device round trip, no scalar read; an accelerator never takes
    this path eagerly, see `usable`). Compiled, or on an accelerator: one `torch.cond` on "every row
    ok", whole batch to the reference otherwise; no host read in the graph."""
    if host_eager(fast):
        bad = failing_rows(ok)
        if bad.numel():
            fast[bad] = slow(bad)
        return fast
    return torch.cond(ok.all(), lambda f: f.clone(), lambda f: slow_all(), (fast,))


def failing_rows(ok: Tensor) -> Tensor:
    """`[n]` indices of the rows where `ok` `[B]` is False (CPU, eager: no scalar read)."""
    return (~ok).nonzero()[:, 0]


# ------------------------------------------------------------------------ candidates handed to the sampler
_OFFERS: list[list] = []


@contextlib.contextmanager
def collect_offers():
    """Collect the candidate sets the sort-free filters offer while the block runs (eager only): a list
    of `(ids [B, K], inside [B])`, `inside` True where the row's kept set provably lies within `ids`."""
    found: list = []
    _OFFERS.append(found)
    try:
        yield found
    finally:
        _OFFERS.pop()


def offer(ids: Tensor, inside: Tensor) -> None:
    """A sort-free filter's candidates, for the chain to hand to `sampling.sample` (see collect_offers)."""
    if _OFFERS and not _compiling():
        _OFFERS[-1].append((ids, inside))
