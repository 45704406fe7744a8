"""ERM and IRM losses against independent computations: pooled cross-entropy written by
hand, and the IRMv1 penalty from the closed-form derivative of the risk in the scale."""

import pytest
import torch
from torch import nn

from shiftbench.training.algorithms import ERM, IRM, create_algorithm

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


def hand_irm_loss(model, batches, weight, divide):
    """(sum_e nll_e + w * sum_e penalty_e) / n_envs, divided by w when ``divide`` and w > 1."""
    nll = sum(ce_by_hand(model(xb), yb) for xb, yb in batches)
    pen = sum(penalty_by_hand(model(xb), yb) for xb, yb in batches)
    loss = (nll + weight * pen) / len(batches)
    return loss / weight if divide and weight > 1 else loss


@pytest.mark.parametrize("scaling", ["domainbed", "irm_paper"])
@pytest.mark.parametrize("step, weight", [(0, 1.0), (4, 1.0), (5, 10.0), (50, 10.0)])
def test_irm_loss_with_annealing(problem, step, weight, scaling):
    model, batches = problem
    irm = IRM(penalty_weight=10.0, anneal_iters=5, loss_scaling=scaling)
    expected = hand_irm_loss(model, batches, weight, divide=scaling == "irm_paper")
    got = irm.loss(model, batches, step)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # gradients flow through the penalty (create_graph) exactly as through the hand formula
    g_got = torch.autograd.grad(got, list(model.parameters()))
    g_expected = torch.autograd.grad(expected, list(model.parameters()))
    for a, b in zip(g_got, g_expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_domainbed_loss_is_not_divided_after_the_switch(problem):
    # DomainBed's IRM.update: loss = nll + w * penalty, never divided by w.
    model, batches = problem
    irm = IRM(penalty_weight=10.0, anneal_iters=0)
    nll = sum(ce_by_hand(model(xb), yb) for xb, yb in batches) / 2
    pen = sum(penalty_by_hand(model(xb), yb) for xb, yb in batches) / 2
    assert irm.loss(model, batches, 3).item() == pytest.approx((nll + 10 * pen).item(), rel=1e-6)
    assert IRM().loss_scaling == "domainbed"


@pytest.mark.parametrize("scaling", ["domainbed", "irm_paper"])
def test_one_momentum_step_at_the_switch_by_hand(problem, scaling):
    """Two steps of SGD with momentum, the penalty switching on at step 1, where DomainBed
    resets the optimizer: the second update is lr * (gradient of the weighted loss), with no
    momentum carried over, and divided by the weight only in the IRM paper's variant."""
    model, batches = problem
    lr, mu, weight = 0.1, 0.9, 10.0
    irm = IRM(penalty_weight=weight, anneal_iters=1, loss_scaling=scaling)
    start = [p.detach().clone() for p in model.parameters()]

    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=mu)
    for step in range(2):
        if step == irm.reset_at:
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=mu)
        optimizer.zero_grad()
        irm.loss(model, batches, step).backward()
        optimizer.step()
    got = [p.detach().clone() for p in model.parameters()]

    with torch.no_grad():
        for p, p0 in zip(model.parameters(), start):
            p.copy_(p0)
    g0 = torch.autograd.grad(hand_irm_loss(model, batches, 1.0, False), list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), g0):
            p.sub_(lr * g)
    g1 = torch.autograd.grad(
        hand_irm_loss(model, batches, weight, scaling == "irm_paper"), list(model.parameters())
    )
    expected = [p.detach() - lr * g for p, g in zip(model.parameters(), g1)]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


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
    with pytest.raises(ValueError, match="domainbed, irm_paper"):
        IRM(loss_scaling="divided")


def test_create_algorithm():
    assert create_algorithm("erm") == ERM()
    assert create_algorithm("irm", penalty_weight=3.0, anneal_iters=2) == IRM(3.0, 2)
    paper = create_algorithm("irm", loss_scaling="irm_paper")
    assert paper == IRM(loss_scaling="irm_paper")
    with pytest.raises(KeyError, match="erm, irm"):
        create_algorithm("dro")
