"""MQAR (Zoology multi-query associative recall) config with any registered mixer.

`get_config("mixer=NAME,preset=P")`: the default task (`ml_collections_configs/mqar.py` documents
it) with mixer NAME at its paper defaults plus the short causal conv where it has one, and the
mixer's named option preset P if given (`PRESETS`). Bidirectional (vision) mixers get
`model.causal=False`: they build a non-causal stack, and the causal LM CLI refuses them.
"""

from __future__ import annotations

from ml_collections import ConfigDict, FieldReference

from linmix.configs.common import (
    distributed_config,
    implementations_config,
    mesh_config,
    parse_variant,
    short_conv_options,
    train_config,
)
from linmix.models import REGISTRY
from linmix.models.mixers.linfusion import LIT

VARIANTS = {"mixer": "attention", "preset": ""}

# Named option sets applied over a mixer's paper defaults: `mqar.py:mixer=linfusion,preset=lit`.
PRESETS = {"linfusion": {"lit": LIT}}

# Options the MQAR config sets away from a mixer's defaults on purpose (besides the short conv).
TASK_OPTIONS = {"jrt": ("prefix_len",)}


def get_config(arg: str | None = None) -> ConfigDict:
    variant = parse_variant(arg, VARIANTS)
    mixer = variant["mixer"]
    options = mqar_mixer_options(mixer, variant["preset"])
    vocab_size = FieldReference(8192)
    num_kv_pairs = FieldReference(4)
    num_passes = FieldReference(1)
    if mixer == "jrt":
        # The key-value context is the non-causal prefix; exact because MQAR supervises only the
        # queries after it. A reference: it follows --config.data.num_kv_pairs / num_passes.
        options.prefix_len = 2 * num_kv_pairs * num_passes
    config = ConfigDict()
    config.seed = 0  # model init, data order and data generation
    config.task = "mqar"
    config.data = ConfigDict(
        dict(
            vocab_size=vocab_size,  # keys from [1, V/2), values from [V/2, V)
            seq_len=64,  # T (even, < vocab_size)
            num_kv_pairs=num_kv_pairs,  # N; needs 4N <= T
            num_train=100_000,  # examples in the training set (Zoology: 100k)
            num_test=3_000,  # examples in the test set (Zoology: 3k)
            power_a=0.01,  # power-law exponent of query gaps
            num_passes=num_passes,  # context repetitions (JRT variant uses 2)
            random_non_queries=False,  # fill non-query positions with random tokens
            worker_count=0,  # grain worker processes (0: in-process)
        )
    )
    config.model = ConfigDict(
        dict(
            vocab_size=vocab_size,
            d_model=64,  # width
            num_layers=2,  # blocks (a multiple of len(layer_pattern))
            num_heads=2,  # heads (mixers may override in mixer_options)
            mixer=mixer,  # registry name of the "L" mixer
            layer_pattern="L",  # "LA": mixer and softmax attention; "CL": BaseConv, then mixer
            mixer_options=options,  # paper defaults + short conv (+ preset)
            conv_options=dict(conv_size=3),  # "C" blocks: BaseConv taps
            mlp_ratio=0.0,  # GLU MLP width ratio; 0 removes it (Zoology MQAR has no MLP)
            norm_eps=1e-6,
            tie_embeddings=True,  # the answer is a copied token: tied embeddings learn it fast
            dtype="float32",  # compute dtype (params stay fp32)
            remat="none",  # "none" | "full" | "dots"
            chunk_size=16,  # chunk length of chunked ops (16 is fastest at T=64 on CPU)
            implementations=implementations_config(),  # per engine; "": the backend default
            causal=REGISTRY[mixer].causal,  # False: a bidirectional stack (vision mixers)
        )
    )
    config.train = train_config()
    config.train.lr = 3e-3
    config.mesh = mesh_config()  # e.g. --config.mesh.seq=4: LASP-2 over 4 devices
    config.distributed = distributed_config()
    return config


def mqar_mixer_options(name: str, preset: str = "") -> ConfigDict:
    """Paper defaults with the short conv on (where the mixer has one), then the named preset."""
    options = short_conv_options(name)
    if preset:
        known = PRESETS.get(name, {})
        if preset not in known:
            raise ValueError(f"mixer {name!r} has no preset {preset!r}; known: {sorted(known)}")
        options.update(known[preset])
    return options
