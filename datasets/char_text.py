"""CharText: character-level language modelling as two environments of a text corpus.

The text (the Python standard library's sources by default, works offline; any local
text file via ``path``; or a Hugging Face text data set already on disk or in the
datasets cache via ``path: hf:<name or folder>``, e.g. ``hf:Skylion007/openwebtext``
for OpenWebText) is cut into non-overlapping blocks of
``block_size + 1`` characters; inputs are a block's first ``block_size``
characters and targets the next character at each position. Environment 0 is
the leading 90% of the text (trained on, with DomainBed's held-out part as the
validation split), environment 1 the trailing 10% (held-out text).
"""

from benchopt import BaseDataset

from shiftbench.data.environments import DomainData
from shiftbench.data.text import char_corpus, check_corpus, corpus_text, text_blocks


class Dataset(BaseDataset):
    name = "char_text"
    parameters = {
        "path": [None],
        "max_chars": [200_000],
        "block_size": [64],
        "test_env": [1],
        "holdout_fraction": [0.1],
        "split_seed": [0],
    }
    environments = ("head", "tail")

    def check_data(self) -> None:
        """Raise one line naming the missing path (run before any trial starts)."""
        check_corpus(self.path)

    def get_data(self) -> dict:
        text = corpus_text(self.path, self.max_chars)
        corpus = char_corpus(text, val_fraction=0.1)
        envs = [
            text_blocks(name, tokens, self.block_size)
            for name, tokens in (("head", corpus.train), ("tail", corpus.val))
        ]
        data = DomainData(
            self.name,
            envs,
            self.test_env,
            corpus.vocab.size,
            self.holdout_fraction,
            self.split_seed,
        )
        return {"data": data}
