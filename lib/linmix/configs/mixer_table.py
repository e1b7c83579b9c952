"""The table of registered mixers (name, paper, engine, train command), from the registry.

    python -m linmix.configs.mixer_table > docs/mixers_table.md

The name of each mixer and its engine come from the first paragraph of its module's docstring;
the full citation (authors, title, venue, arXiv id) from `CITATIONS`.
"""

from __future__ import annotations

import re
import sys

from linmix.models import REGISTRY

CITATIONS = {
    "agent": 'Han, Ye, Han, Xia, Pan, Wan, Song & Huang, "Agent Attention: On the Integration of '
    'Softmax and Linear Attention", ECCV 2024 (arXiv:2312.08874)',
    "alrnn": 'Brenner, Hemmer, Monfared & Durstewitz, "Almost-Linear RNNs Yield Highly '
    'Interpretable Symbolic Codes in Dynamical Systems Reconstruction", NeurIPS 2024 '
    "(arXiv:2410.14240)",
    "attention": 'Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (arXiv:1706.03762); '
    'sliding window: Beltagy, Peters & Cohan, "Longformer", 2020 (arXiv:2004.05150)',
    "deltanet": 'Yang, Wang, Zhang, Shen & Kim, "Parallelizing Linear Transformers with the Delta '
    'Rule over Sequence Length", NeurIPS 2024 (arXiv:2406.06484)',
    "ecoformer": 'Liu, Pan, He, Cai & Zhuang, "EcoFormer: Energy-Saving Attention with Linear '
    'Complexity", NeurIPS 2022 (arXiv:2209.09004)',
    "gated_deltanet": 'Yang, Kautz & Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with '
    'Delta Rule", ICLR 2025 (arXiv:2412.06464)',
    "gla": 'Yang, Wang, Shen, Panda & Kim, "Gated Linear Attention Transformers with '
    'Hardware-Efficient Training", ICML 2024 (arXiv:2312.06635)',
    "hgrn2": 'Qin, Yang, Sun, Shen, Li, Sun & Zhong, "HGRN2: Gated Linear RNNs with State '
    'Expansion", COLM 2024 (arXiv:2404.07904)',
    "inline": 'Han, Pu, Xia, Han, Pan, Li, Lu, Song & Huang, "Bridging the Divide: Reconsidering '
    'Softmax and Linear Attention", NeurIPS 2024 (arXiv:2412.06590)',
    "jrt": 'Arora, Timalsina, Singhal, Spector, Eyuboglu, Zhao, Rao, Rudra & Ré, "Just read twice: '
    'closing the recall gap for recurrent language models", arXiv 2024 (arXiv:2407.05483)',
    "l2vit": 'Zheng, "The Linear Attention Resurrection in Vision Transformer", 2025 '
    "(arXiv:2501.16182)",
    "lightnet": 'Qin, Mao, Shen, Li, Zhang, Dai & Zhong, "You Only Scan Once: Efficient '
    'Multi-dimension Sequential Modeling with LightNet", arXiv preprint 2024 (arXiv:2405.21022)',
    "lightning": 'Qin, Sun, Li, Shen, Sun & Zhong, "Lightning Attention-2: A Free Lunch for '
    'Handling Unlimited Sequence Lengths in Large Language Models", arXiv 2024 '
    '(arXiv:2401.04658); the TNL layer of "Various Lengths, Constant Speed: Efficient Language '
    'Modeling with Lightning Attention", ICML 2024 (arXiv:2405.17381)',
    "linear_attn": 'Katharopoulos, Vyas, Pappas & Fleuret, "Transformers are RNNs: Fast '
    'Autoregressive Transformers with Linear Attention", ICML 2020 (arXiv:2006.16236)',
    "linfusion": 'Liu, Yu, Tan & Wang, "LinFusion: 1 GPU, 1 Minute, 16K Image", 2024 '
    '(arXiv:2409.02097); preset `lit`: Wang et al., "LiT: Delving into a Simplified Linear '
    'Diffusion Transformer for Image Generation", 2025 (arXiv:2501.12976)',
    "longvq": 'Liu, Wang, Li, Wang, Lin & Li, "LongVQ: Long Sequence Modeling with Vector '
    'Quantization on Structured Memory", IJCAI 2024 (arXiv:2404.11163)',
    "lssl": 'Gu, Johnson, Goel, Saab, Dao, Rudra & Ré, "Combining Recurrent, Convolutional, and '
    'Continuous-time Models with Linear State-Space Layers", NeurIPS 2021 (arXiv:2110.13985); '
    'diagonal state of S4D: Gu, Gupta, Goel & Ré, "On the Parameterization and Initialization of '
    'Diagonal State Space Models", NeurIPS 2022 (arXiv:2206.11893)',
    "mala": 'Fan, Huang, Ai & He, "Rectifying Magnitude Neglect in Linear Attention", ICCV 2025 '
    "(arXiv:2507.00698)",
    "mamba": 'Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", '
    "COLM 2024 (arXiv:2312.00752)",
    "mamba2": 'Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms '
    'Through Structured State Space Duality", ICML 2024 (arXiv:2405.21060)',
    "rala": 'Fan, Huang & He, "Breaking the Low-Rank Dilemma of Linear Attention", CVPR 2025 '
    "(arXiv:2411.07635)",
    "retnet": 'Sun, Dong, Huang, Ma, Xia, Xue, Wang & Wei, "Retentive Network: A Successor to '
    'Transformer for Large Language Models", 2023 (arXiv:2307.08621)',
    "sea": 'Lee, Kim, Willette & Hwang, "SEA: Sparse Linear Attention with Estimated Attention '
    'Mask", ICLR 2024 (arXiv:2310.01777)',
    "slab": 'Guo, Chen, Tang & Wang, "SLAB: Efficient Transformers with Simplified Linear '
    'Attention and Progressive Re-parameterized Batch Normalization", ICML 2024 '
    "(arXiv:2405.11582)",
    "sse": 'Pan, An, Li, Chou, Zhu, Wang, Wang, Wang & Li, "Scaling Linear Attention with Sparse '
    'State Expansion", ICLR 2026 (arXiv:2507.16577)',
    "transnormer": 'Qin, Han, Sun, Li, Kong, Barnes & Zhong, "The Devil in Linear Transformer", '
    "EMNLP 2022 (arXiv:2210.10340)",
}

HEADER = """# Mixers

Every mixer in `linmix.models.mixers.REGISTRY`. Causal mixers train on the MQAR task with the
command shown (paper defaults plus the short conv every MQAR run uses); bidirectional (vision)
mixers build a non-causal stack (`model.causal=False`) that the causal LM CLI refuses.
Regenerate with `python -m linmix.configs.mixer_table > docs/mixers_table.md`.
"""


def train_command(name: str) -> str:
    return (
        f"python -m linmix.main --config=ml_collections_configs/mqar.py:mixer={name} "
        f"--workdir=runs/{name}"
    )


def _sentences(text: str) -> list[str]:
    """Split at '. ' outside parentheses and quotes (so 'et al. 2020' inside them stays)."""
    out, start, depth, quoted = [], 0, 0, False
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == '"':
            quoted = not quoted
        elif ch == "." and not depth and not quoted and text[i + 1 : i + 2] in ("", " "):
            out.append(text[start : i + 1].strip())
            start = i + 1
    return [*out, text[start:].strip()] if text[start:].strip() else out


def _top_level_colon(text: str) -> int:
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch in "([") - (ch in ")]")
        if ch == ":" and not depth and text[i + 1 : i + 2] == " ":
            return i
    return -1


def summary(name: str) -> tuple[str, str]:
    """(what it is, engine and form) from the first paragraph of the mixer module's docstring."""
    doc = sys.modules[REGISTRY[name].__module__].__doc__ or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    first, *rest = _sentences(paragraph) or [""]
    engine = " ".join(rest)
    if not engine and (colon := _top_level_colon(first)) >= 0:
        first, engine = first[:colon] + ".", first[colon + 2 :]
    engine = engine.strip()
    return first.rstrip("."), (engine[:1].upper() + engine[1:]).rstrip(".")


def _cell(text: str) -> str:
    text = re.sub(r"arXiv:(\d{4}\.\d{4,5})", r"[arXiv:\1](https://arxiv.org/abs/\1)", text)
    return text.replace("|", r"\|")


def markdown_table() -> str:
    lines = ["| name | paper | engine | train command |", "|---|---|---|---|"]
    for name in sorted(REGISTRY):
        what, engine = summary(name)
        paper = f"{what}. {CITATIONS[name]}" if name in CITATIONS else what
        command = (
            f"`{train_command(name)}`"
            if REGISTRY[name].causal
            else "bidirectional: not trained by the causal LM CLI"
        )
        lines.append(f"| `{name}` | {_cell(paper)} | {_cell(engine)} | {command} |")
    return "\n".join(lines) + "\n"


def document() -> str:
    return f"{HEADER}\n{markdown_table()}"


if __name__ == "__main__":
    print(document(), end="")
