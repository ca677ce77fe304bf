"""Token log-probs and entropies: hand-computed values, the keep sampling mask, chunking."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algo import logprobs
from rlvr.algo.logprobs import entropy_from_logits, token_logprobs
from rlvr.algo.losses import PolicyLossConfig, policy_loss


def test_token_logprobs_by_hand():
    # logits 0, ln 3 -> probabilities 1/4, 3/4; temperature 2 halves the logits: 1, sqrt 3 -> 1/(1+sqrt 3)
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])  # [1, 2, 2]
    ids = torch.tensor([[0, 1]])
    assert torch.allclose(token_logprobs(logits, ids), torch.tensor([[math.log(0.25), math.log(0.75)]]))
    want = math.log(1 / (1 + math.sqrt(3)))
    assert torch.allclose(token_logprobs(logits, ids, temperature=2.0)[0, 0], torch.tensor(want))


def test_entropy_by_hand():
    uniform = torch.zeros(2, 3, 5)
    assert torch.allclose(entropy_from_logits(uniform), torch.full((2, 3), math.log(5)))
    # p = 1/4, 3/4: H = -(1/4 ln 1/4 + 3/4 ln 3/4)
    two = torch.tensor([[[0.0, math.log(3.0)]]])
    assert torch.allclose(
        entropy_from_logits(two), torch.tensor([[-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]])
    )


def test_keep_mask_by_hand():
    # V = 4, the sampler (top-k = 2) could draw tokens 0 and 1 only.
    # pi_theta logits 0,0,0,0 -> on the kept set 1/2 each (not 1/4);
    # pi_old logits 0, ln 3, 5, 5 -> on the kept set 1/4, 3/4 (without the mask token 0 would be ~0.0034).
    keep = torch.tensor([[[True, True, False, False]]])
    ids = torch.tensor([[0]])
    new = token_logprobs(torch.zeros(1, 1, 4), ids, keep_mask=keep)
    old = token_logprobs(torch.tensor([[[0.0, math.log(3.0), 5.0, 5.0]]]), ids, keep_mask=keep)
    assert torch.allclose(new, torch.tensor([[math.log(0.5)]]))
    assert torch.allclose(old, torch.tensor([[math.log(0.25)]]))
    assert torch.allclose(
        (new - old).exp(), torch.tensor([[2.0]])
    )  # the ratio compares the same action space
    assert torch.allclose(
        entropy_from_logits(torch.zeros(1, 1, 4), keep_mask=keep), torch.tensor([[math.log(2)]])
    )


def test_keep_mask_gradients_are_finite_and_zero_outside():
    logits = torch.randn(2, 3, 6, requires_grad=True)
    keep = torch.rand(2, 3, 6) > 0.4
    keep[..., 0] = True
    ids = torch.zeros(2, 3, dtype=torch.long)
    (
        token_logprobs(logits, ids, keep_mask=keep).sum() + entropy_from_logits(logits, keep_mask=keep).sum()
    ).backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[~keep] == 0).all()


def test_entropy_with_minus_inf_logits_has_no_nan():
    logits = torch.tensor([[[0.0, float("-inf"), float("-inf")]]], requires_grad=True)
    h = entropy_from_logits(logits)
    h.sum().backward()
    assert h.item() == 0.0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("chunk", [7, 40, 80])  # columns within a row; one row; two rows per chunk
def test_chunked_equals_unchunked(monkeypatch, chunk):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 8, dtype=torch.bfloat16).requires_grad_(True)
    ids = torch.randint(0, 8, (3, 5))
    keep = torch.rand(3, 5, 8) > 0.3
    keep.scatter_(-1, ids.unsqueeze(-1), True)

    def run():
        logits.grad = None
        lp = token_logprobs(logits, ids, temperature=0.7, keep_mask=keep)
        h = entropy_from_logits(logits, temperature=0.7, keep_mask=keep)
        (lp.sum() + h.sum()).backward()
        return lp.detach(), h.detach(), logits.grad.clone()

    full = run()
    monkeypatch.setattr(logprobs, "CHUNK_ELEMENTS", chunk)
    chunked = run()
    assert full[0].dtype == torch.float32  # bf16 logits are scored in float32
    for a, b in zip(full, chunked):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_minus_inf_logp_on_padding_does_not_poison_the_loss():
    # a keep mask that excludes the pad token gives -inf log-probs on padding; the loss must stay finite
    logp = torch.tensor([[-1.0, float("-inf")]], requires_grad=True)
    mask = torch.tensor([[1.0, 0.0]])
    loss, metrics = policy_loss(
        logp, logp.detach(), torch.tensor([1.0]), mask, PolicyLossConfig(beta=0.1), ref_logp=logp.detach()
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert all(torch.isfinite(v).all() for v in metrics.values())
