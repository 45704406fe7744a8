"""Character corpora for the small language models of Study 3, offline by default.

The default corpus is the Python standard library's own ``.py`` sources, which
every Python installation has: files in sorted path order, concatenated and
capped, so a run is reproducible on one installation without any download.
Any local text file, or an OpenWebText copy already on disk, can replace it.
Text becomes a tensor of character ids (the narrowest integer type that holds
the vocabulary) that lives on the training device; ``get_batch`` samples
(input, next-character target) windows from it without a DataLoader.
"""

from __future__ import annotations

import contextlib
import os
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from shiftbench.data.environments import Environment

DEFAULT_MAX_CHARS = 2_000_000
_SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})


@dataclass(frozen=True)
class CharVocab:
    """The sorted distinct characters of a text; a character's id is its index."""

    chars: str
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("vocabulary characters must be distinct")
        object.__setattr__(self, "index", {c: i for i, c in enumerate(self.chars)})

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        """Character ids as a tensor of the narrowest integer type that holds them."""
        try:
            ids = [self.index[c] for c in text]
        except KeyError as error:
            raise ValueError(f"character {error.args[0]!r} is not in the vocabulary") from None
        return torch.tensor(ids, dtype=_id_dtype(self.size))

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        values = ids.tolist() if isinstance(ids, Tensor) else ids
        return "".join(self.chars[i] for i in values)


@dataclass(frozen=True)
class CharCorpus:
    """A vocabulary and the encoded text split into a leading train and a trailing val part."""

    vocab: CharVocab
    train: Tensor
    val: Tensor


def char_corpus(
    text: str, val_fraction: float = 0.1, device: torch.device | str = "cpu"
) -> CharCorpus:
    """Encode ``text`` with its own vocabulary; the last ``val_fraction`` of it is val."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    vocab = CharVocab.from_text(text)
    data = vocab.encode(text).to(device)
    split = len(data) - int(len(data) * val_fraction)
    return CharCorpus(vocab, data[:split], data[split:])


def get_batch(
    data: Tensor, block_size: int, batch_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows of ``data``: inputs x (B, T) and targets y, the same
    windows shifted by one character, as int64 on ``data``'s device (the generator must be
    on that device too)."""
    if len(data) <= block_size:
        raise ValueError(f"{len(data)} tokens cannot hold a window of {block_size} + 1")
    starts = torch.randint(
        len(data) - block_size, (batch_size, 1), generator=generator, device=data.device
    )
    windows = data[starts + torch.arange(block_size + 1, device=data.device)].long()
    return windows[:, :-1], windows[:, 1:]


def stdlib_sources() -> list[Path]:
    """The standard library's ``.py`` files (third-party package folders excluded), sorted by
    their path relative to the library root."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in _SKIPPED_DIRS]
        files += [Path(folder, name) for name in names if name.endswith(".py")]
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def stdlib_text(max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The first ``max_chars`` characters of the standard library sources, one file after
    another (files that are not valid UTF-8 are skipped)."""
    return _capped(_read_utf8(stdlib_sources()), max_chars)


def load_text(path: str | Path, max_chars: int | None = None) -> str:
    """A local UTF-8 text file, optionally capped to its first ``max_chars`` characters."""
    text = Path(path).read_text(encoding="utf-8")
    return text if max_chars is None else text[:max_chars]


def load_openwebtext(
    source: str | Path = "Skylion007/openwebtext",
    split: str = "train",
    max_chars: int = DEFAULT_MAX_CHARS,
    cache_dir: str | Path | None = None,
    text_field: str = "text",
) -> str:
    """The first ``max_chars`` characters of OpenWebText (documents joined by blank lines)
    from a local copy only: a ``save_to_disk`` folder or a folder of data files at
    ``source``, or a Hugging Face dataset name already in the datasets cache (loaded with
    offline mode on). Never downloads; a missing copy is one ``FileNotFoundError`` line."""
    import datasets

    path = Path(source)
    if path.exists():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
            table = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            table = datasets.load_dataset(str(path), split=split, cache_dir=_str(cache_dir))
    else:
        cache = Path(cache_dir or datasets.config.HF_DATASETS_CACHE)
        if not _in_cache(str(source), cache):
            raise FileNotFoundError(
                f"OpenWebText: no local copy; {source!r} is neither a path nor in the "
                f"Hugging Face datasets cache {cache} (download it there first)"
            )
        with _hub_offline():
            table = datasets.load_dataset(str(source), split=split, cache_dir=str(cache))
    documents = (row[text_field] for row in table)
    return _capped(_separated(documents), max_chars)


HF_PREFIX = "hf:"


def check_corpus(path: str | Path | None) -> None:
    """One ``FileNotFoundError`` line if ``path`` names a local text file that is not there
    (the standard library and ``hf:`` data sets are checked where they are read)."""
    if path is not None and not str(path).startswith(HF_PREFIX) and not Path(path).is_file():
        raise FileNotFoundError(
            f"char_text: text file not found at {path}; give a local UTF-8 text file, "
            f"{HF_PREFIX}<name> for a Hugging Face text data set, or null for the Python "
            "standard library's sources"
        )


def corpus_text(path: str | Path | None, max_chars: int) -> str:
    """The first ``max_chars`` characters of a corpus: the standard library's sources for
    None, a Hugging Face text data set for ``hf:<name or local copy>`` (OpenWebText is
    ``hf:Skylion007/openwebtext``; offline, see ``load_openwebtext``), else a local file."""
    if path is None:
        return stdlib_text(max_chars)
    if str(path).startswith(HF_PREFIX):
        return load_openwebtext(str(path).removeprefix(HF_PREFIX), max_chars=max_chars)
    return load_text(path, max_chars)


def _id_dtype(vocab_size: int) -> torch.dtype:
    if vocab_size <= 256:
        return torch.uint8
    return torch.int16 if vocab_size <= 2**15 else torch.int32


def _read_utf8(paths: Sequence[Path]) -> Iterator[str]:
    for path in paths:
        try:
            yield path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def _separated(documents: Iterator[str]) -> Iterator[str]:
    for i, document in enumerate(documents):
        yield document if i == 0 else "\n\n" + document


def _capped(pieces: Iterator[str], max_chars: int) -> str:
    """Concatenate pieces until ``max_chars`` characters (reading no further)."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    out, total = [], 0
    for piece in pieces:
        out.append(piece[: max_chars - total])
        total += len(out[-1])
        if total >= max_chars:
            break
    return "".join(out)


def _in_cache(name: str, cache: Path) -> bool:
    """Whether the datasets cache holds a prepared copy of dataset ``name``."""
    from datasets.naming import camelcase_to_snakecase

    parts = name.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    return any(path.is_dir() for path in (cache / "___".join(parts)).glob("*/*/*"))


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Turn on datasets' and huggingface_hub's offline mode for the duration."""
    import datasets
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _str(path: str | Path | None) -> str | None:
    return None if path is None else str(path)


def text_blocks(name: str, tokens: Tensor, block_size: int) -> Environment:
    """Non-overlapping blocks of ``tokens`` as an environment: inputs ``(n, block_size)``
    and next-character targets ``(n, block_size)``, both int64."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    n = (len(tokens) - 1) // block_size
    if n < 2:
        raise ValueError(f"{name}: {len(tokens)} characters make fewer than 2 blocks")
    ids = tokens.long()
    x = ids[: n * block_size].view(n, block_size)
    y = ids[1 : n * block_size + 1].view(n, block_size)
    return Environment(name, x, y)
