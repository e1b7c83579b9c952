"""Every registered mixer documents itself: `help(REGISTRY[name])` names the paper, the engine,
whether the mixer is causal, and each of its own options."""

from __future__ import annotations

import dataclasses
import re

import pytest

from linmix.configs.mixer_table import CITATIONS
from linmix.models import REGISTRY
from linmix.models.mixers.base import Mixer, Options

# What a docstring may name as the mixer's engine or core (docs/engines.md, docs/mixers.md).
ENGINE_KEYWORDS = (
    "engine L",
    "engine Δ",
    "selective scan",
    "convolution mode",
    "softmax attention",
    "global reduction",
    "lax.scan",
)
BASE_FIELDS = {f.name for f in dataclasses.fields(Options)}


def own_doc(cls: type) -> str:
    """The docstring written on the class itself (None and inherited ones count as missing)."""
    doc = cls.__dict__.get("__doc__")
    return doc.strip() if isinstance(doc, str) else ""


def test_base_documents_shared_options():
    doc = own_doc(Mixer)
    for field in BASE_FIELDS:
        assert re.search(rf"\b{field}\b", doc), f"Mixer docstring does not name {field!r}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_mixer_has_own_docstring(name):
    cls = REGISTRY[name]
    doc = own_doc(cls)
    assert doc, f"mixer {name!r}: {cls.__name__} has no docstring of its own"
    for parent in cls.__mro__[1:]:
        assert doc != own_doc(parent), f"mixer {name!r}: docstring copied from {parent.__name__}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_mixer_docstring_names_its_options(name):
    cls = REGISTRY[name]
    doc = own_doc(cls)
    own = [f.name for f in dataclasses.fields(cls.Options) if f.name not in BASE_FIELDS]
    missing = [field for field in own if not re.search(rf"\b{field}\b", doc)]
    assert not missing, f"mixer {name!r}: docstring does not name option(s) {missing}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_mixer_docstring_names_engine_and_causality(name):
    cls = REGISTRY[name]
    doc = own_doc(cls)
    lower = doc.lower()
    assert any(k.lower() in lower for k in ENGINE_KEYWORDS), (
        f"mixer {name!r}: docstring names none of the engines {ENGINE_KEYWORDS}"
    )
    word = "causal" if cls.causal else "bidirectional"
    assert re.search(rf"\b{word}\b", lower), f"mixer {name!r}: docstring does not say {word!r}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_mixer_docstring_cites_the_paper(name):
    doc = own_doc(REGISTRY[name])
    ids = re.findall(r"arXiv:\d{4}\.\d{4,5}", CITATIONS.get(name, ""))
    missing = [i for i in ids if i not in doc]
    assert not missing, f"mixer {name!r}: docstring lacks {missing} (mixer_table.CITATIONS)"
    assert re.search(r"\b(19|20)\d\d\b", doc), f"mixer {name!r}: docstring gives no year"
