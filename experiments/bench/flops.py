"""FLOP counts for the op benchmarks (`experiments/bench/ops.py`), counted in code, not by hand.

    python experiments/bench/flops.py     # prints the forward counts of the default shapes

Conventions (all counts are for the whole batch: B * H heads, fp32):

- A contraction counts 2 FLOPs per multiply-add. Cheap elementwise work (masks, cumsums, the
  scalar decay multiply, softmax exp/max/sum, scaling) is not counted, except the vector-gate
  decay tensor of the chunked form, which is the algorithm's extra cost there (see below).
- The counts are of the algorithm's useful work, not of what XLA happens to execute.
- Backward = 2x forward (the usual convention: a gradient w.r.t. each of the two operands of every
  contraction), so forward+backward = 3x forward. Gate gradients are not counted separately.

Per head, forward, T tokens (T rounded up to whole chunks for the chunked form):

- Chunked GLA, chunk C (`gla_chunked`): intra-chunk 2*T*C*(K+V) (Q K^T over full C x C blocks,
  then P V; the causal mask is applied to full blocks, as the code computes them) plus
  inter-chunk 4*T*K*V (state read q S: 2*T*K*V, state write k^T v: 2*T*K*V).
  Vector gates [B,T,H,K] do not factor out of Q K^T: the code builds a [C, C, K] decay tensor per
  chunk (difference + exp: counted 2 FLOPs per element) and contracts q, k and the decay together
  (3 FLOPs per element instead of 2), so they add 3*T*C*K.
- Per-token scan (`gla_scan`, used for both the 'reference' lax.scan and the 'associative_scan'
  forms): 4*T*K*V (state write k_t^T v_t plus the add: 2*K*V, read q_t S_t: 2*K*V per token).
  The parallel associative scan executes roughly twice this (its combine tree), which is counted
  as its overhead, not as useful work.
- Chunked delta rule, chunk C (`linmix.ops.delta`, WY/UT form): per chunk K K^T, Q K^T and
  P W (2*C*C*K each), the triangular solve applied to [K | V] (C*C*(K+V)), W and U from it
  (2*C*C*(K+V)), P U (2*C*C*V); per token the state read and write through W, Q and Kd
  (6*K*V) and the chunk transition Kd^T W (2*K*K); per chunk the K x K by K x V transition
  product (2*K*K*V). The gate adds only elementwise work.
- Per-token delta rule (`delta_scan`): k_t S, the rank-1 update and q_t S_t: 6*T*K*V.
- Selective scan (Mamba-1, per-element decay) over D channels with M state elements, every form: no
  contraction at all; per token and (channel, state) element the decay multiply, the input
  product Δ B x (2), the add and the output multiply-add C h (2): 6*T*D*N. exp is not counted.
- Causal softmax attention (`attention`): 2*T*T*(K+V) / 2 = T*T*(K+V) (Q K^T and P V over the
  causal half of the T x T scores). XLA on CPU computes the full square, i.e. twice this.
- Dense matmul [M, N] x [N, P]: 2*M*N*P (`matmul`).
"""

from __future__ import annotations

GATES = ("none", "scalar", "vector")
PASSES = ("fwd", "fwd+bwd")


def _chunk(T: int, chunk_size: int) -> tuple[int, int]:
    """(C, padded T) the way `linmix.ops.gla.xla` chunks: C <= next power of two >= T."""
    C = min(chunk_size, 1 << (T - 1).bit_length())
    return C, -(-T // C) * C


def gla_chunked(
    B: int, T: int, H: int, K: int, V: int, *, chunk_size: int = 64, gate: str = "scalar"
) -> int:
    """Forward FLOPs of the chunked form (see the module docstring)."""
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
    C, Tp = _chunk(T, chunk_size)
    intra = 2 * Tp * C * (K + V)
    inter = 4 * Tp * K * V
    decay = 3 * Tp * C * K if gate == "vector" else 0
    return B * H * (intra + inter + decay)


def gla_scan(B: int, T: int, H: int, K: int, V: int) -> int:
    """Forward FLOPs of a per-token recurrence (reference scan or associative scan)."""
    return B * H * 4 * T * K * V


def delta_chunked(B: int, T: int, H: int, K: int, V: int, *, chunk_size: int = 64) -> int:
    """Forward FLOPs of the chunked delta rule (see the module docstring)."""
    C, Tp = _chunk(T, chunk_size)
    per_chunk = 2 * C * C * (3 * K + V) + C * C * (K + V) + 2 * C * C * (K + V) + 2 * K * K * V
    per_token = 6 * K * V + 2 * K * K
    return B * H * ((Tp // C) * per_chunk + Tp * per_token)


def delta_scan(B: int, T: int, H: int, K: int, V: int) -> int:
    """Forward FLOPs of the per-token delta rule."""
    return B * H * 6 * T * K * V


def selective_scan(B: int, T: int, D: int, N: int) -> int:
    """Forward FLOPs of the Mamba-1 selective scan (all forms)."""
    return B * 6 * T * D * N


def attention(B: int, T: int, H: int, K: int, V: int, *, causal: bool = True) -> int:
    """Forward FLOPs of softmax attention (causal: half of the T x T scores)."""
    full = 2 * T * T * (K + V)
    return B * H * (full // 2 if causal else full)


def matmul(M: int, N: int, P: int) -> int:
    """FLOPs of an [M, N] x [N, P] matmul."""
    return 2 * M * N * P


def with_backward(fwd_flops: int, pass_: str) -> int:
    """Total FLOPs of a pass: 'fwd' or 'fwd+bwd' (= 3x forward, backward = 2x forward)."""
    if pass_ not in PASSES:
        raise ValueError(f"pass must be one of {PASSES}, got {pass_!r}")
    return fwd_flops if pass_ == "fwd" else 3 * fwd_flops


if __name__ == "__main__":
    B, H, K, V = 1, 4, 64, 64
    for T in (1024, 4096, 16384, 65536):
        counts = {
            "gla xla": gla_chunked(B, T, H, K, V, gate="scalar"),
            "gla scan": gla_scan(B, T, H, K, V),
            "delta xla": delta_chunked(B, T, H, K, V),
            "selective": selective_scan(B, T, H * V, 16),
            "attention": attention(B, T, H, K, V),
        }
        print(f"T={T}: " + ", ".join(f"{f} {c / 1e9:.2f} GFLOP" for f, c in counts.items()))
