"""Per-chunk parts of engine L for per-channel (vector) gates: secondary chunking as a binary
hierarchy of sub-chunks (docs/forms.md, "Secondary chunking").

With b_r the inclusive cumulative log-decay inside the chunk (a K-vector per token), the pair
weights are P[r, s] = sum_i q_ri k_si exp(b_ri - b_si) for s <= r. The decay does not factor out
of the key sum, and (Q * exp(b)) (K * exp(-b))^T would need exp(-b_s), which overflows. Each pair
s < r is instead taken at a reference point rho between its two tokens, where

    exp(b_r - b_s) = exp(b_r - rho) exp(rho - b_s),    both exponents <= 0.

For m = 1, 2, 4, .., C / 2 the chunk is cut into blocks of 2m tokens, each two halves of m. A
query in the second half and a key in the first meet at the last token of the first half:

    P[r, s] = (q_r * exp(b_r - rho)) . (k_s * exp(rho - b_s)),

one batched matrix product [m, K] x [K, m] per 2m-block. Every pair s < r is counted at exactly
one level, the one where the two tokens first fall in different halves, and the diagonal is
q_r . k_r with weight exactly 1. The forward pass takes the levels m < c (pairs inside one block
of c = BLOCK tokens) together, as the explicit [c, c, K] decay of each block: one fused
product-and-sum is cheaper than two levels of tiny matrix products. No [C, C, K] tensor is built:
the work is a few [C, K] passes and matrix products whose sizes add up to one C x C x K product.

The rescaling factors are products of decays, never differences of cumulative sums. With
a_j = exp(g_j) and the chunk cut into blocks of c tokens: inside a block they are products of
a_j over the tokens in range; across blocks, the block's own part (decay from its start to r,
or from s to its end) times whole-block decays e = prod of a over a block. Every factor is a
product of numbers in [0, 1], so strong decays only underflow, and no gate gradient comes from
two large cancelling terms (the forward's in-block exp(l_r - l_s) is a difference of sums of at
most c tokens, and the backward does not differentiate it). The decayed queries q * exp(b_r), keys
k * exp(b_C - b_s) and the chunk decay exp(b_C) are products of the same factors.

Backward (`_parts_bwd`, by hand: autodiff of the slices, block products and [c, c, K] decays is
several times slower on XLA:CPU) through the levels m = 1, 2, .., C / 2, the blocks included:
per level dq_hat = dX k_hat and dk_hat = dX^T q_hat; a factor over the tokens j in a range gives
each g_j in that range the gradient d(factor) * factor, so the gate gradient is a sum of suffix
and prefix sums inside blocks and of the gradients of whole-block decays, with no cancellation.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# Block length for the rescaling factors: inside a block they are products of per-token decays,
# across blocks products of whole-block decays.
BLOCK = 4


class VectorParts(NamedTuple):
    P_LRS: jax.Array  # pair weights [.., C, C], diagonal included, no segment mask
    q_decay_LCK: jax.Array  # q_r * exp(b_r)
    k_decay_LCK: jax.Array  # k_s * exp(b_C - b_s)
    a_LK: jax.Array  # exp(b_C)


def vector_parts(q_LCK: jax.Array, k_LCK: jax.Array, g_LCK: jax.Array) -> VectorParts:
    """The value-independent parts of every chunk for a per-channel gate (module docstring).

    Inputs [.., C, K] with any leading dims, g <= 0, C a power of two. Differentiable, with a
    hand-written backward (`_parts_bwd`) that recomputes the factors from q, k and g."""
    *lead, C, K = q_LCK.shape
    P, q_decay, k_decay, a = _parts(*(x.reshape(-1, C, K) for x in (q_LCK, k_LCK, g_LCK)))
    return VectorParts(
        P.reshape(*lead, C, C),
        q_decay.reshape(*lead, C, K),
        k_decay.reshape(*lead, C, K),
        a.reshape(*lead, K),
    )


class _Factors(NamedTuple):
    a_RCK: jax.Array  # per-token decay exp(g)
    u_RNcK: jax.Array  # decay from the start of r's block to r (inclusive)
    w_RNcK: jax.Array  # decay from s to the end of s's block (exclusive)
    e_RNK: jax.Array  # decay over a whole block


def _factors(g_RCK: jax.Array) -> _Factors:
    R, C, K = g_RCK.shape
    c = min(BLOCK, C)
    a_RCK = jnp.exp(g_RCK)
    u_RNcK = _block_products(a_RCK, c, "inclusive").reshape(R, C // c, c, K)
    w_RNcK = _block_products(a_RCK, c, "after").reshape(R, C // c, c, K)
    return _Factors(a_RCK, u_RNcK, w_RNcK, u_RNcK[:, :, c - 1])


def _level_factors(f: _Factors, m: int) -> tuple[jax.Array, jax.Array]:
    """Rescaling factors [R, C, K] of the level with halves of m tokens: for a query (second
    half) the decay from the start of its half, for a key (first half) the decay to the end of
    its half. Both are computed at every position; each is used only in its own half."""
    R, n, c, K = f.u_RNcK.shape
    if m < c:  # inside a block: products of the per-token decays
        return _block_products(f.a_RCK, m, "inclusive"), _block_products(f.a_RCK, m, "after")
    # Across blocks: the block's own factor times the decays of the whole blocks in between.
    to_block_RNK = _grouped_products(f.e_RNK, m // c, "exclusive")
    from_block_RNK = _grouped_products(f.e_RNK, m // c, "after")
    q_fac = f.u_RNcK * to_block_RNK[:, :, None]
    k_fac = f.w_RNcK * from_block_RNK[:, :, None]
    return q_fac.reshape(R, n * c, K), k_fac.reshape(R, n * c, K)


def _second_half(C: int, m: int) -> jax.Array:
    """[1, C, 1] bool: the token lies in the second half of its block of 2m (a query there)."""
    return ((jnp.arange(C) // m) % 2 == 1)[None, :, None]


def _levels(C: int) -> list[int]:
    """Half lengths m = 1, 2, 4, .., C / 2."""
    return [1 << i for i in range(C.bit_length() - 1)]


@jax.custom_vjp
def _parts(q_RCK, k_RCK, g_RCK):
    return _parts_fwd(q_RCK, k_RCK, g_RCK)[0]


def _parts_fwd(q_RCK, k_RCK, g_RCK):
    R, C, K = q_RCK.shape
    f = _factors(g_RCK)
    n, c = f.u_RNcK.shape[1:3]
    blocks = (R, n, c, K)
    P = _band(q_RCK.reshape(blocks), k_RCK.reshape(blocks), g_RCK.reshape(blocks))
    for m in _levels(C)[c.bit_length() - 1 :]:  # m >= c
        q_hat_JmK, k_hat_JmK = _level_operands(q_RCK, k_RCK, _level_factors(f, m), m)
        X_Jmm = jnp.einsum("jrk,jsk->jrs", q_hat_JmK, k_hat_JmK)
        P_J2mm = P.reshape(R * C // (2 * m), 2, m, m)
        upper = jnp.concatenate([P_J2mm[:, 0], jnp.zeros_like(X_Jmm)], axis=-1)
        lower = jnp.concatenate([X_Jmm, P_J2mm[:, 1]], axis=-1)
        P = jnp.concatenate([upper, lower], axis=-2)
    # The carried state reaches r through the blocks before r's; keys reach the chunk end
    # through the blocks after theirs.
    before_RNK = _scan_products(f.e_RNK, "exclusive")
    after_RNK = _scan_products(f.e_RNK, "after")
    q_decay = q_RCK.reshape(R, n, c, K) * f.u_RNcK * before_RNK[:, :, None]
    k_decay = k_RCK.reshape(R, n, c, K) * f.w_RNcK * after_RNK[:, :, None]
    a_RK = before_RNK[:, n - 1] * f.e_RNK[:, n - 1]
    out = (P.reshape(R, C, C), q_decay.reshape(R, C, K), k_decay.reshape(R, C, K), a_RK)
    return out, (q_RCK, k_RCK, g_RCK)


@jax.jit
def _band(q_RNcK: jax.Array, k_RNcK: jax.Array, g_RNcK: jax.Array) -> jax.Array:
    """The pairs inside each block of c tokens, [R, n, c, c]: exp(l_r - l_s) explicitly, with l
    the cumulative sum of g restarted in the block (a difference of at most c - 1 gates), 1 on
    the diagonal. The mask multiplies the argument as well as the result, so anti-causal
    (positive) differences become exp(0) * 0 and nothing overflows; XLA fuses the whole
    product-and-sum, which a `where` would split in two. Its own `jit` keeps that fusion, and so
    the rounding of the sum, the same whether the caller runs jitted or op by op (a kernel's
    inference forward must equal its differentiated forward bit for bit)."""
    c = q_RNcK.shape[2]
    running = [g_RNcK[:, :, 0]]
    for i in range(1, c):  # unrolled: XLA:CPU's cumsum here costs layout copies
        running.append(running[-1] + g_RNcK[:, :, i])
    l_RNcK = jnp.stack(running, axis=2)
    strict_11rs1 = jnp.tril(jnp.ones((c, c), q_RNcK.dtype), k=-1)[None, None, :, :, None]
    eye_11rs1 = jnp.eye(c, dtype=q_RNcK.dtype)[None, None, :, :, None]
    diff = l_RNcK[:, :, :, None, :] - l_RNcK[:, :, None, :, :]
    decay = jnp.exp(diff * strict_11rs1) * strict_11rs1 + eye_11rs1
    return jnp.sum(q_RNcK[:, :, :, None, :] * k_RNcK[:, :, None, :, :] * decay, axis=-1)


def _level_operands(q_RCK, k_RCK, factors, m):
    """Queries of the second halves and keys of the first halves, rescaled: [R * C / 2m, m, K]."""
    R, C, K = q_RCK.shape
    q_fac, k_fac = factors
    halves = (R * C // (2 * m), 2, m, K)
    return (q_RCK * q_fac).reshape(halves)[:, 1], (k_RCK * k_fac).reshape(halves)[:, 0]


def _parts_bwd(residuals, cotangents):
    """Each factor is a product of per-token decays a_j = exp(g_j) over a range of tokens, so
    the gradient of g_j is the sum of d(factor) * factor over the factors whose range holds j:
    suffix and prefix sums inside blocks, and sums of the cotangents of whole-block decays."""
    q_RCK, k_RCK, g_RCK = residuals
    dP_RCC, dq_decay_RCK, dk_decay_RCK, da_RK = cotangents
    R, C, K = q_RCK.shape
    f = _factors(g_RCK)
    n, c = f.u_RNcK.shape[1:3]

    # Undo the assembly of P: the level blocks, then the diagonal.
    dX = {}
    D = dP_RCC
    for m in reversed(_levels(C)):
        D = D.reshape(R * C // (2 * m), 2 * m, 2 * m)
        dX[m] = D[:, m:, :m]
        D = jnp.stack([D[:, :m, :m], D[:, m:, m:]], axis=1)
    dP_diag_RC1 = D.reshape(R, C, 1)

    # Per level, every position is either a query (second half) or a key (first half): the
    # gradients of the rescaled operands, interleaved back into token order, with the roles
    # told apart by `second_half`.
    grads_x, dlogs = [], []
    dlog_e = jnp.zeros_like(f.e_RNK)
    for m in _levels(C):
        halves = (R * C // (2 * m), 2, m, K)
        q_fac, k_fac = _level_factors(f, m)
        q_hat, k_hat = _level_operands(q_RCK, k_RCK, (q_fac, k_fac), m)
        if m == 1:
            dq_hat, dk_hat = dX[m] * k_hat, dX[m] * q_hat
        else:
            dq_hat = jnp.einsum("jrs,jsk->jrk", dX[m], k_hat)
            # dX^T is materialised: folded into the product it makes a slow transposed dot.
            dX_t = jax.lax.optimization_barrier(jnp.swapaxes(dX[m], 1, 2))
            dk_hat = jnp.einsum("jsr,jrk->jsk", dX_t, q_hat)
        d_hat = jnp.stack([dk_hat, dq_hat], axis=1).reshape(R, C, K)
        second_half = _second_half(C, m)
        grad_x = d_hat * jnp.where(second_half, q_fac, k_fac)
        dlog = grad_x * jnp.where(second_half, q_RCK, k_RCK)  # d(log factor)
        grads_x.append((second_half, grad_x))
        if m < c:  # factors are products of a over (half start, r] and (s, half end]
            dlog_hm = dlog.reshape(halves)
            within = jnp.stack(
                [_scan_sums(dlog_hm[:, 0], "exclusive"), _scan_sums(dlog_hm[:, 1], "suffix")], 1
            )
            dlogs.append(("a", None, within.reshape(R, C, K)))
        else:
            dlogs.append(("uw", second_half, dlog))
            # to_block = exclusive products of e in groups, from_block = 'after' products: the
            # transposes of those sums are the 'after' and exclusive sums.
            block_sums = jnp.sum(dlog.reshape(R, n, c, K), axis=2)
            is_q = _second_half(n, m // c)
            M = m // c
            dlog_e = dlog_e + _grouped_sums(jnp.where(is_q, block_sums, 0.0), M, "after")
            dlog_e = dlog_e + _grouped_sums(jnp.where(is_q, 0.0, block_sums), M, "exclusive")

    dq = dP_diag_RC1 * k_RCK + sum(jnp.where(h, gx, 0.0) for h, gx in grads_x)
    dk = dP_diag_RC1 * q_RCK + sum(jnp.where(h, 0.0, gx) for h, gx in grads_x)
    dlog_a = sum((d for kind, _, d in dlogs if kind == "a"), jnp.zeros_like(g_RCK))
    dlog_u = sum(
        (jnp.where(h, d, 0.0) for kind, h, d in dlogs if kind == "uw"), jnp.zeros_like(g_RCK)
    ).reshape(R, n, c, K)
    dlog_w = sum(
        (jnp.where(h, 0.0, d) for kind, h, d in dlogs if kind == "uw"), jnp.zeros_like(g_RCK)
    ).reshape(R, n, c, K)

    before_RNK = _scan_products(f.e_RNK, "exclusive")
    after_RNK = _scan_products(f.e_RNK, "after")
    q_RNcK = q_RCK.reshape(R, n, c, K)
    k_RNcK = k_RCK.reshape(R, n, c, K)
    dq_decay_RNcK = dq_decay_RCK.reshape(R, n, c, K)
    dk_decay_RNcK = dk_decay_RCK.reshape(R, n, c, K)
    dq = dq + (dq_decay_RNcK * f.u_RNcK * before_RNK[:, :, None]).reshape(R, C, K)
    dk = dk + (dk_decay_RNcK * f.w_RNcK * after_RNK[:, :, None]).reshape(R, C, K)
    dlog_qd = dq_decay_RNcK * q_RNcK * f.u_RNcK * before_RNK[:, :, None]
    dlog_kd = dk_decay_RNcK * k_RNcK * f.w_RNcK * after_RNK[:, :, None]
    dlog_u = dlog_u + dlog_qd
    dlog_w = dlog_w + dlog_kd
    dlog_e = dlog_e + _grouped_sums(jnp.sum(dlog_qd, axis=2), n, "after")
    dlog_e = dlog_e + _grouped_sums(jnp.sum(dlog_kd, axis=2), n, "exclusive")
    dlog_e = dlog_e + (da_RK * before_RNK[:, n - 1] * f.e_RNK[:, n - 1])[:, None]

    # u = products of a up to r in the block, w = products after s, e = the whole block.
    dlog_a_RNcK = (
        _scan_sums(dlog_u.reshape(R * n, c, K), "suffix").reshape(R, n, c, K)
        + _scan_sums(dlog_w.reshape(R * n, c, K), "exclusive").reshape(R, n, c, K)
        + dlog_e[:, :, None]
    )
    dg = dlog_a + dlog_a_RNcK.reshape(R, C, K)
    return dq, dk, dg


_parts.defvjp(_parts_fwd, _parts_bwd)


def _block_products(a_RCK: jax.Array, m: int, kind: str) -> jax.Array:
    """Products of per-token decays restarted in blocks of m tokens, unrolled: 'inclusive'
    y_r = prod_{j <= r} a_j or 'after' y_s = prod_{j > s} a_j, j within the block."""
    R, C, K = a_RCK.shape
    return _scan_products(a_RCK.reshape(R * (C // m), m, K), kind).reshape(R, C, K)


def _scan_sums(x_JmK: jax.Array, kind: str) -> jax.Array:
    """Sums along axis 1 (short, unrolled): 'suffix' y_i = sum_{j >= i} x_j, 'exclusive'
    y_i = sum_{j < i} x_j or 'after' y_i = sum_{j > i} x_j."""
    m = x_JmK.shape[1]
    order = range(m) if kind == "exclusive" else range(m - 1, -1, -1)
    out = [None] * m
    run = None
    for i in order:
        if kind == "suffix":
            run = x_JmK[:, i] if run is None else run + x_JmK[:, i]
            out[i] = run
        else:
            out[i] = jnp.zeros_like(x_JmK[:, 0]) if run is None else run
            run = x_JmK[:, i] if run is None else run + x_JmK[:, i]
    return jnp.stack(out, axis=1)


def _grouped_sums(x_RNK: jax.Array, group: int, kind: str) -> jax.Array:
    """`_scan_sums` restarted in consecutive groups of `group` along axis 1."""
    R, n, K = x_RNK.shape
    if group == 1:
        return jnp.zeros_like(x_RNK)
    return _scan_sums(x_RNK.reshape(R * (n // group), group, K), kind).reshape(R, n, K)


def _scan_products(x_RNK: jax.Array, kind: str) -> jax.Array:
    """Products along axis 1 (short, unrolled): 'inclusive' y_i = prod_{j <= i} x_j,
    'exclusive' y_i = prod_{j < i} x_j or 'after' y_i = prod_{j > i} x_j."""
    n = x_RNK.shape[1]
    order = range(n - 1, -1, -1) if kind == "after" else range(n)
    out = [None] * n
    run = None
    for i in order:
        if kind == "inclusive":
            run = x_RNK[:, i] if run is None else run * x_RNK[:, i]
            out[i] = run
        else:
            out[i] = jnp.ones_like(x_RNK[:, 0]) if run is None else run
            run = x_RNK[:, i] if run is None else run * x_RNK[:, i]
    return jnp.stack(out, axis=1)


def _grouped_products(x_RNK: jax.Array, group: int, kind: str) -> jax.Array:
    """`_scan_products` restarted in consecutive groups of `group` along axis 1."""
    R, n, K = x_RNK.shape
    if group == 1:
        return jnp.ones_like(x_RNK)
    grouped = _scan_products(x_RNK.reshape(R * (n // group), group, K), kind)
    return grouped.reshape(R, n, K)
