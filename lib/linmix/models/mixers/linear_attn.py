"""Vanilla kernel linear attention (Katharopoulos et al. 2020). Engine L, no gate.

o_t = phi(q_t) S_t with S_t = sum_{s<=t} phi(k_s)^T v_s; normalised either by the denominator
phi(q_t) . sum phi(k_s) (a ones column appended to v) or, as fla defaults, by an RMSNorm on the
output (docs/mixers.md#linear_attn).
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from linmix.models.mixers.common import LinearMixer, LinearOptions, advance
from linmix.models.mixers.recurrent import run_gla
from linmix.ops.gla import FEATURE_MAPS

NORMALIZATIONS = ("rmsnorm", "denominator")


@dataclasses.dataclass(frozen=True)
class LinearAttnOptions(LinearOptions):
    feature_map: str = "elu1"
    normalization: str = "rmsnorm"
    use_output_gate: bool = False


class LinearAttn(LinearMixer, nnx.Module):
    """Kernel linear attention (Katharopoulos, Vyas, Pappas & Fleuret, ICML 2020, arXiv:2006.16236).

    Engine L (`linmix.ops.gla`) with no gate (nothing decays), scale 1, chunked form: the state is
    the running sum of phi(k)^T v. Causal: decodes from a fixed-size cache (the state, with a
    denominator column when used, and the short-conv tails).

    Options (the paper's feature map; the normalisation default is fla's; num_heads: `Mixer`):
        feature_map ("elu1"): phi on q and k, a key of `linmix.ops.gla.FEATURE_MAPS` (elu1 =
            elu + 1, identity, relu, silu, softmax, taylor2).
        normalization ("rmsnorm"): "rmsnorm", a per-head RMSNorm of the output, or "denominator",
            the paper's o_t = phi(q_t) S_t / (phi(q_t) . sum_{s<=t} phi(k_s)).
        expand_k (1.0), expand_v (1.0): total key / value width over all heads, times d_model.
        use_short_conv (False), conv_size (4): causal depthwise conv of conv_size taps, then
            SiLU, on q, k and v.
        use_output_gate (False): multiply the normed output by swish(x W_g) before W_o.
    """

    name = "linear_attn"
    Options = LinearAttnOptions

    @classmethod
    def check(cls, cfg, opts) -> None:
        super().check(cfg, opts)
        if opts.feature_map not in FEATURE_MAPS:
            known = sorted(FEATURE_MAPS)
            raise ValueError(
                f"mixer 'linear_attn': feature_map {opts.feature_map!r} not in {known}"
            )
        if opts.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"mixer 'linear_attn': normalization {opts.normalization!r} not in {NORMALIZATIONS}"
            )

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.build(cfg, rngs)
        self.feature_map = o.feature_map
        self.denominator = o.normalization == "denominator"

    @property
    def state_width(self) -> int:
        return self.head_v + int(self.denominator)

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        (q_BTHK, k_BTHK, v_BTHV), conv = self.qkv(x_BTD, segment_ids, cache and cache["conv"])
        phi = FEATURE_MAPS[self.feature_map]
        q_BTHK, k_BTHK = phi(q_BTHK), phi(k_BTHK)
        o_BTHV, state = run_gla(
            q_BTHK,
            k_BTHK,
            v_BTHV,
            None,
            state=cache and cache["state"],
            scale=1.0,
            normalize=self.denominator,
            segment_ids=segment_ids,
            chunk_size=self.chunk_size,
        )
        return self.output(o_BTHV, x_BTD), advance(cache, x_BTD.shape[1], state=state, conv=conv)
