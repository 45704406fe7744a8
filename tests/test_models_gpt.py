"""CharGPT: shapes, causality, weight tying, and that Adam lowers its loss."""

from __future__ import annotations

import pytest
import torch

from shiftbench.data.text import char_corpus, get_batch
from shiftbench.models.gpt import CharGPT, loss
from shiftbench.training.rotations import RotatedOptimizer


def _model(**kwargs: object) -> CharGPT:
    torch.manual_seed(0)
    return CharGPT(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, **kwargs)


def test_shapes_and_names() -> None:
    model = _model()
    idx = torch.randint(0, 11, (3, 5))
    assert model(idx).shape == (3, 5, 11)
    names = dict(model.named_parameters())
    assert names["blocks.0.attn.qkv.weight"].shape == (48, 16)
    assert {"wte.weight", "wpe.weight", "head.weight"} <= names.keys()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.int64))


def test_causal_future_tokens_do_not_change_past_logits() -> None:
    model = _model().eval()
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 11
    before, after = model(idx), model(changed)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert (before[:, 5:] - after[:, 5:]).abs().max() > 1e-6


def test_tied_head_shares_the_embedding() -> None:
    model = _model(tied=True)
    assert model.head.weight is model.wte.weight
    untied = _model()
    n_tied = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in untied.parameters()) - n_tied == 11 * 16


def test_loss_is_mean_cross_entropy() -> None:
    logits = torch.randn(2, 3, 5)
    targets = torch.randint(0, 5, (2, 3))
    log_probs = logits.log_softmax(-1)
    expected = -log_probs.gather(-1, targets.unsqueeze(-1)).mean()
    torch.testing.assert_close(loss(logits, targets), expected)


@pytest.mark.parametrize("rotated", [False, True])
def test_adam_steps_lower_the_loss_on_a_tiny_corpus(rotated: bool) -> None:
    corpus = char_corpus("the cat sat on the mat. " * 40, val_fraction=0.0)
    torch.manual_seed(0)
    model = CharGPT(corpus.vocab.size, block_size=8, n_layer=2, n_head=2, n_embd=16)
    if rotated:
        optimizer = RotatedOptimizer(
            model.named_parameters(),
            torch.optim.Adam,
            scope="layer",
            block_size=64,
            module=model,
            lr=1e-2,
        )
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    x, y = get_batch(corpus.train, 8, 16, generator)
    initial = loss(model(x), y).item()
    for _ in range(20):
        x, y = get_batch(corpus.train, 8, 16, generator)
        optimizer.zero_grad()
        loss(model(x), y).backward()
        optimizer.step()
    x, y = get_batch(corpus.train, 8, 16, generator)
    assert loss(model(x), y).item() < 0.7 * initial
