"""Character corpora: determinism, vocabulary round trip, shifted batches, local loaders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shiftbench.data.text import (
    CharVocab,
    char_corpus,
    get_batch,
    load_openwebtext,
    load_text,
    stdlib_sources,
    stdlib_text,
)


def test_stdlib_text_is_deterministic_and_capped() -> None:
    sources = stdlib_sources()
    assert len(sources) > 100
    assert all(path.suffix == ".py" for path in sources)
    assert not any("site-packages" in path.parts for path in sources)
    first = stdlib_text(50_000)
    assert len(first) == 50_000
    assert first == stdlib_text(50_000)
    assert stdlib_text(80_000).startswith(first)
    assert first.startswith(sources[0].read_text(encoding="utf-8")[:100])


def test_vocab_round_trip_and_narrow_ids() -> None:
    text = "def f(x):\n    return x ** 2  # ünïcode\n"
    vocab = CharVocab.from_text(text)
    assert vocab.chars == "".join(sorted(set(text)))
    ids = vocab.encode(text)
    assert ids.dtype == torch.uint8
    assert vocab.decode(ids) == text
    assert [vocab.chars[i] for i in ids.tolist()] == list(text)
    with pytest.raises(ValueError, match="'@'"):
        vocab.encode("@")
    wide = CharVocab.from_text("".join(chr(0x100 + i) for i in range(300)))
    assert wide.encode(wide.chars).dtype == torch.int16


def test_corpus_split_is_a_partition() -> None:
    text = stdlib_text(10_000)
    corpus = char_corpus(text, val_fraction=0.2)
    assert len(corpus.val) == 2_000
    assert corpus.vocab.decode(torch.cat([corpus.train, corpus.val])) == text


def test_batches_shift_by_one_and_are_reproducible() -> None:
    data = torch.arange(100, dtype=torch.int32)
    x, y = get_batch(data, 8, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (16, 8)
    assert x.dtype == torch.int64
    torch.testing.assert_close(y, x + 1)
    torch.testing.assert_close(x[:, 1:] - x[:, :-1], torch.ones(16, 7, dtype=torch.int64))
    assert int(y.max()) <= 99
    x2, _ = get_batch(data, 8, 16, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, x2)
    x3, _ = get_batch(data, 8, 16, torch.Generator().manual_seed(1))
    assert not torch.equal(x, x3)
    with pytest.raises(ValueError, match="window"):
        get_batch(data[:8], 8, 2, torch.Generator())


def test_load_text_reads_a_local_file(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("hello wörld\n", encoding="utf-8")
    assert load_text(path) == "hello wörld\n"
    assert load_text(path, max_chars=5) == "hello"


def test_openwebtext_from_a_saved_copy(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    documents = ["first document", "second one", "third"]
    datasets.Dataset.from_dict({"text": documents}).save_to_disk(str(tmp_path / "owt"))
    text = load_openwebtext(tmp_path / "owt", max_chars=1000)
    assert text == "\n\n".join(documents)
    assert load_openwebtext(tmp_path / "owt", max_chars=20) == text[:20]


def test_openwebtext_missing_copy_is_one_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    with pytest.raises(FileNotFoundError, match="OpenWebText: no local copy"):
        load_openwebtext("Skylion007/openwebtext", cache_dir=tmp_path)
