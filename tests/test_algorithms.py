"""ERM and IRM losses against independent computations: pooled cross-entropy written by
hand, and the IRMv1 penalty from the closed-form derivative of the risk in the scale."""

import pytest
import torch
from torch import nn

from shiftbench.algorithms import ERM, IRM, create_algorithm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ce_by_hand(logits, y):
    """Mean negative log-likelihood, written without F.cross_entropy."""
    log_z = torch.logsumexp(logits, dim=1)
    return (log_z - logits.gather(1, y[:, None])[:, 0]).mean()


def dscale_by_hand(logits, y):
    """d/ds mean CE(s * logits, y) at s = 1, in closed form: mean_i (p_i - e_{y_i}) . z_i."""
    p = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)
    return ((p - onehot) * logits).sum(1).mean()


def penalty_by_hand(logits, y):
    return dscale_by_hand(logits[0::2], y[0::2]) * dscale_by_hand(logits[1::2], y[1::2])


@pytest.fixture
def problem():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    batches = [
        (
            torch.randn(n, 4, generator=gen, dtype=torch.float64),
            torch.randint(3, (n,), generator=gen),
        )
        for n in (6, 9)
    ]
    return model, batches


def test_erm_is_pooled_cross_entropy(problem):
    model, batches = problem
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    expected = ce_by_hand(model(x), y)
    assert ERM().loss(model, batches, step=0).item() == pytest.approx(expected.item(), rel=1e-12)
    # pooled, not the mean of per-environment means (the batches have different sizes)
    per_env = sum(ce_by_hand(model(xb), yb) for xb, yb in batches) / 2
    assert abs(per_env.item() - expected.item()) > 1e-6
    assert ERM().reset_at is None


def test_closed_form_derivative_matches_autograd_on_a_scalar():
    # The hand formula is itself checked against autograd through a scalar scale.
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(4, (7,), generator=gen)
    s = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(ce_by_hand(logits * s, y), s)
    assert grad.item() == pytest.approx(dscale_by_hand(logits, y).item(), rel=1e-10)


def test_irm_penalty_equals_the_product_of_half_batch_gradients(problem):
    model, batches = problem
    for xb, yb in batches:
        logits = model(xb)
        got = IRM.penalty(logits, yb)
        # the dummy scale is float32, as DomainBed's, so its gradient is float32-accurate
        assert got.item() == pytest.approx(penalty_by_hand(logits, yb).item(), rel=1e-6)


def test_irm_penalty_of_perfectly_calibrated_scale_is_zero():
    # Logits that are all equal: the risk is log(k) for every scale, so the gradient is 0.
    logits = torch.zeros(8, 5, dtype=torch.float64)
    y = torch.arange(8) % 5
    assert IRM.penalty(logits, y).item() == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("step, weight", [(0, 1.0), (4, 1.0), (5, 10.0), (50, 10.0)])
def test_irm_loss_with_annealing(problem, step, weight):
    model, batches = problem
    irm = IRM(penalty_weight=10.0, anneal_iters=5)
    nll = sum(ce_by_hand(model(xb), yb) for xb, yb in batches)
    pen = sum(penalty_by_hand(model(xb), yb) for xb, yb in batches)
    expected = (nll + weight * pen) / len(batches)
    if weight > 1:
        expected = expected / weight
    got = irm.loss(model, batches, step)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # gradients flow through the penalty (create_graph) exactly as through the hand formula
    g_got = torch.autograd.grad(got, list(model.parameters()))
    g_expected = torch.autograd.grad(expected, list(model.parameters()))
    for a, b in zip(g_got, g_expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_irm_weight_below_one_is_not_divided(problem):
    model, batches = problem
    irm = IRM(penalty_weight=0.5, anneal_iters=0)
    nll = sum(ce_by_hand(model(xb), yb) for xb, yb in batches)
    pen = sum(penalty_by_hand(model(xb), yb) for xb, yb in batches)
    expected = (nll + 0.5 * pen) / 2
    assert irm.loss(model, batches, 0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_irm_reset_at_and_validation():
    assert IRM(anneal_iters=500).reset_at == 500
    assert IRM(anneal_iters=0).reset_at is None
    with pytest.raises(ValueError):
        IRM(penalty_weight=-1.0)
    with pytest.raises(ValueError):
        IRM(anneal_iters=-1)


def test_create_algorithm():
    assert create_algorithm("erm") == ERM()
    assert create_algorithm("irm", penalty_weight=3.0, anneal_iters=2) == IRM(3.0, 2)
    with pytest.raises(KeyError, match="erm, irm"):
        create_algorithm("dro")
