"""The MQAR config builds every registered mixer with its paper defaults; variants are checked;
docs/mixers_table.md is the generator's output."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from linmix.configs import mixer_table, parse_variant
from linmix.configs.lm import get_config as lm_config
from linmix.configs.mqar import PRESETS, TASK_OPTIONS, get_config
from linmix.models import REGISTRY, ModelConfig, parameter_count
from linmix.models.mixers.linfusion import LIT
from linmix.train.validate import validate

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "ml_collections_configs"


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_mqar_config_builds_every_mixer_with_paper_defaults(name):
    config = get_config(f"mixer={name}")
    assert config.model.mixer == name
    assert config.model.causal == REGISTRY[name].causal
    # Causal mixers pass the trainer's whole-config check; vision mixers build a bidirectional
    # stack config (the causal LM refuses them).
    cfg = validate(config) if REGISTRY[name].causal else ModelConfig(**config.model.to_dict())
    assert cfg.mixer == name
    defaults = REGISTRY[name].Options()
    # The MQAR task turns the short conv on for every mixer; TASK_OPTIONS names further options
    # it sets for the task on purpose (jrt's prefix = the key-value context).
    task_options = {"use_short_conv", *TASK_OPTIONS.get(name, ())}
    for key, value in config.model.mixer_options.items():
        if key not in task_options:
            assert getattr(defaults, key) == (tuple(value) if isinstance(value, list) else value)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.py")), ids=lambda p: p.name)
def test_every_config_file_rejects_unknown_variant_keys(path):
    module = load(path)
    assert module.get_config().to_dict() == module.get_config("").to_dict()
    with pytest.raises(ValueError, match="config variant 'bogus=1'"):
        module.get_config("bogus=1")
    with pytest.raises(ValueError, match="config variant 'gla'"):
        module.get_config("gla")


def test_config_file_is_the_library_config():
    assert load(CONFIGS / "mqar.py").get_config("mixer=gla") == get_config("mixer=gla")


def test_parse_variant_types_values_like_the_defaults():
    assert parse_variant("mixer=gla,layers=4", {"mixer": "a", "layers": 2}) == {
        "mixer": "gla",
        "layers": 4,
    }


def test_jrt_prefix_follows_the_key_value_context():
    config = get_config("mixer=jrt")
    assert config.model.mixer_options.prefix_len == 2 * 4 * 1
    config.data.num_kv_pairs, config.data.num_passes = 8, 2
    assert config.model.to_dict()["mixer_options"]["prefix_len"] == 2 * 8 * 2


def test_presets():
    options = get_config("mixer=linfusion,preset=lit").model.mixer_options
    assert {k: options[k] for k in LIT} == LIT
    ModelConfig(**get_config("mixer=linfusion,preset=lit").model.to_dict())
    assert set(PRESETS) <= set(REGISTRY)
    with pytest.raises(ValueError, match="no preset 'lit'"):
        get_config("mixer=gla,preset=lit")


def test_mixer_table_is_current():
    path = ROOT / "docs" / "mixers_table.md"
    want = mixer_table.document()
    assert path.read_text() == want, (
        f"{path} is stale: python -m linmix.configs.mixer_table > docs/mixers_table.md"
    )


def test_mixer_table_cites_and_commands_every_mixer():
    table = mixer_table.markdown_table()
    assert set(mixer_table.CITATIONS) == set(REGISTRY)
    for name, cls in REGISTRY.items():
        (row,) = [line for line in table.splitlines() if line.startswith(f"| `{name}` |")]
        assert "arXiv:" in row, name
        assert (mixer_table.train_command(name) in row) == cls.causal, name


def test_configs_import_neither_train_nor_main():
    code = (
        "import sys, linmix.configs, linmix.configs.mqar, linmix.configs.mixer_table\n"
        "bad = [m for m in sys.modules if m.split('.')[:2] in (['linmix', 'train'], "
        "['linmix', 'main'])]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize(
    "size, low, high", [("tiny", 0.6e6, 0.9e6), ("125m", 110e6, 160e6), ("340m", 320e6, 400e6),
                        ("1.3b", 1.2e9, 1.45e9)],
)  # fmt: skip
def test_lm_sizes_have_their_parameter_counts(size, low, high):
    model = lm_config(f"mixer=gla,size={size}").model
    model.vocab_size = 256 if size == "tiny" else 32000  # the papers' sizes use a 32k BPE
    n = parameter_count(ModelConfig(**model.to_dict()))
    assert low <= n <= high, f"{size}: {n:,} parameters"


def test_lm_config_refuses_bidirectional_mixers_and_unknown_sizes():
    with pytest.raises(ValueError, match="bidirectional"):
        lm_config("mixer=slab")
    with pytest.raises(ValueError, match="unknown size"):
        lm_config("size=7b")
