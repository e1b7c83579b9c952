"""Input checks shared by the public ops: shapes, dtypes and Python ints always; values
(decays <= 0, sorted segment ids, token ids in the vocabulary) when the call is eager. Under jit
the values are tracers and go unchecked, unless the trace runs inside `checked`, which stages
them as `checkify` checks and raises their failures as ValueError."""

from __future__ import annotations

import contextvars
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

# True while `checked` traces its function: value checks on tracers are staged, not skipped.
_STAGED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "linmix_staged_checks", default=False
)


def check_segment_ids(segment_ids: jax.Array | None, B: int, T: int) -> None:
    if segment_ids is None:
        return
    if segment_ids.shape != (B, T):
        raise ValueError(f"segment_ids must be [B, T] = {(B, T)}, got {segment_ids.shape}")
    if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise ValueError(f"segment_ids must have an integer dtype, got {segment_ids.dtype}")


def check_chunk_size(chunk_size) -> None:
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int | np.integer)
        or chunk_size <= 0
        or chunk_size & (chunk_size - 1)
    ):
        raise ValueError(f"chunk_size must be a positive power of two, got {chunk_size!r}")


def check_float_state(initial_state: jax.Array | None, shape: tuple, layout: str) -> None:
    """initial_state must be `shape` (named `layout`, e.g. '[B, H, K, V]') with a float dtype."""
    if initial_state is None:
        return
    if initial_state.shape != shape:
        raise ValueError(f"initial_state must be {layout} = {shape}, got {initial_state.shape}")
    if not jnp.issubdtype(initial_state.dtype, jnp.floating):
        raise ValueError(f"initial_state must have a float dtype, got {initial_state.dtype}")


def check_float_dtypes(**arrays: jax.Array | None) -> None:
    """Each named array (None: absent) has a real floating dtype; the error names the first
    argument that does not (an integer q would otherwise give an integer output)."""
    for name, x in arrays.items():
        if x is not None and not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise ValueError(f"{name} must have a float dtype, got {jnp.result_type(x)}")


def _concrete(x) -> bool:
    """A value we can look at now (eager call, or a constant closed over by a trace), not a
    tracer inside jit / grad / vmap."""
    return x is not None and not isinstance(x, jax.core.Tracer)


def _staged(x) -> bool:
    """A traced value whose checks `checked` asked to stage."""
    return x is not None and isinstance(x, jax.core.Tracer) and _STAGED.get()


def _stage(ok: jax.Array, message: str, *values: jax.Array) -> None:
    """A checkify check of the scalar `ok` (`message` formats `values`). debug=True: a jaxpr
    traced under `checked` and reused by a plain jit (JAX caches the traces of jitted
    functions) compiles the check to nothing instead of failing to lower."""
    checkify.check(ok, message, *values, debug=True)


def check_nonpositive(name: str, x: jax.Array | None, meaning: str = "log-decays") -> None:
    """Values <= 0: checked on concrete values, staged under `checked`, else skipped (jit).
    NumPy, not jnp, on concrete values: inside a trace jnp would stage the check out."""
    message = f"{name} must be {meaning} <= 0, got a maximum of "
    if _concrete(x):
        worst = float(np.max(np.asarray(x, np.float32), initial=-np.inf))
        if worst > 0:
            raise ValueError(message + str(worst))
    elif _staged(x):
        worst = jnp.max(jax.lax.stop_gradient(x).astype(jnp.float32), initial=-jnp.inf)
        _stage(jnp.logical_not(worst > 0), message + "{}", worst)


_ORDER_MESSAGE = "segment_ids must be non-decreasing along T (packed documents)"


def check_segment_order(segment_ids: jax.Array | None) -> None:
    """segment_ids non-decreasing along T (checked on concrete values, staged under `checked`)."""
    if _concrete(segment_ids):
        seg = np.asarray(segment_ids)
        if np.any(seg[:, 1:] < seg[:, :-1]):
            raise ValueError(_ORDER_MESSAGE)
    elif _staged(segment_ids):
        _stage(jnp.all(segment_ids[:, 1:] >= segment_ids[:, :-1]), _ORDER_MESSAGE)


def check_token_ids(tokens: jax.Array, vocab_size: int) -> None:
    """Token ids are integers in [0, vocab_size) (an id outside gives NaN embeddings): the dtype
    always, the values when concrete or under `checked`."""
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"token ids must have an integer dtype, got {tokens.dtype}")
    message = f"token ids must be in [0, {vocab_size}), got ids from "
    if _concrete(tokens):
        ids = np.asarray(tokens)
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(message + f"{ids.min()} to {ids.max()}")
    elif _staged(tokens) and tokens.size:
        lo, hi = jnp.min(tokens), jnp.max(tokens)
        _stage((lo >= 0) & (hi < vocab_size), message + "{} to {}", lo, hi)


def check_cache_room(pos: jax.Array, new_tokens: int, limit: jax.Array) -> None:
    """A decode cache at position `pos` holding `limit` tokens (-1: unbounded) takes
    `new_tokens` more: checked when concrete or under `checked`."""
    message = f"decoding {new_tokens} more token(s) overflows the cache: position {{}} of {{}}"
    if _concrete(pos) and _concrete(limit):
        if int(limit) >= 0 and int(pos) + new_tokens > int(limit):
            raise ValueError(
                message.format(int(pos), int(limit))
                + "; make it with init_cache(batch, max_len) large enough"
            )
    elif _staged(pos) or _staged(limit):
        _stage((limit < 0) | (pos + new_tokens <= limit), message, pos, limit)


def checked(fn):
    """`fn` jitted with the value checks of the linmix ops it calls: log-decays <= 0, sorted
    segment ids, token ids in the vocabulary, decode caches not overflowing. A failed check
    raises ValueError with its message.

        run = linmix.ops.checked(lambda q, k, v, g: gla(q, k, v, g)[0])
        o = run(q, k, v, g)        # ValueError if any g > 0, as an eager call raises

    `fn` may take gradients, and may call a model passed as an argument (a pytree). Only the ops
    traced while `fn` is traced here are checked (a function jitted and traced earlier elsewhere
    is reused from JAX's cache without checks). Every argument is traced: bind Python options
    (chunk_size, implementation, ...) inside `fn`. Without `checked`, ops under jit check no
    values and cost nothing extra.
    """

    @functools.wraps(fn)
    def staging(*args, **kwargs):
        token = _STAGED.set(True)
        try:
            return fn(*args, **kwargs)
        finally:
            _STAGED.reset(token)

    run = jax.jit(checkify.checkify(staging, errors=checkify.user_checks))

    @functools.wraps(fn)
    def call(*args, **kwargs):
        err, out = run(*args, **kwargs)
        message = err.get()
        if message is not None:
            raise ValueError(message)
        return out

    return call
