"""Draft-model alignment losses for speculative beam search (AtSpeed, arXiv 2410.05165).

Every loss works on padded, batched tensors; -inf marks a padded (or disallowed) entry.
Step-level inputs describe the target's beam steps (a "node" = a prefix of a target beam):
  p_logp: [num_nodes, A] the target's log-probabilities (log-softmax over the whole vocabulary)
          of the A allowed tokens at the node (the catalogue trie's children), -inf padding;
  q_logp: [num_nodes, A] the draft's log-probabilities of the same tokens, -inf padding.
Sequence-level inputs describe the target's top-K beams of one prompt:
  p_seq, q_seq: [num_prompts, K] log p(y) and log q(y) of each beam's code sequence (sums of
          the per-step full-vocabulary log-probabilities), -inf padding.

Formulas (P~, Q~ are renormalised over the set named; S_q(n) = the draft's top-k allowed tokens
at node n; B = the target's top-K beams):
  forward KL (KD):      KD(n)  = sum_{y allowed} P~(y) (log P~(y) - log q(y)),
                        P~ = p renormalised over the allowed tokens; q is the draft's
                        full-vocabulary distribution (sum over allowed <= 1, so KD >= 0);
  restricted reverse KL: RKL(n) = sum_{y in S_q(n)} Q~(y) (log Q~(y) - log P~(y)),
                        Q~, P~ = q, p renormalised over S_q(n) (S_q chosen without gradient);
  density regulariser:  PD     = -(1/|B|) sum_{y in B} log q(y);
  sequence TV:          TV     = 1/2 sum_{y in B} |P~(y) - Q~(y)|, P~, Q~ = p(y), q(y)
                        renormalised over B.
AtSpeed-S = mean_n RKL(n) + alpha PD; AtSpeed-R = TV (+ alpha PD); the baseline = mean_n KD(n).
Pure functions of their arguments; thread-compatible.
"""
import math

import torch

NEG_INF = -math.inf


def _renormalise(logp):
    """Log-probabilities renormalised over the finite entries of each row (rows with none: -inf)."""
    norm = torch.logsumexp(logp, dim=-1, keepdim=True)
    out = logp - norm
    return torch.where(torch.isfinite(logp), out, torch.full_like(out, NEG_INF))


def _xlogy_rows(weight_logp, a, b):
    """sum over finite entries of exp(weight_logp) * (a - b), per row."""
    finite = torch.isfinite(weight_logp)
    w = torch.where(finite, weight_logp.exp(), torch.zeros_like(weight_logp))
    diff = torch.where(finite, a - b, torch.zeros_like(a))
    return (w * diff).sum(dim=-1)


def forward_kl(p_logp, q_logp):
    """[num_nodes] KD(n): forward KL from the target (renormalised over allowed) to the draft."""
    p = _renormalise(p_logp)
    # Where the target has mass the draft's log-probability must be finite (it is for a model).
    return _xlogy_rows(p, p, q_logp)


def restricted_reverse_kl(p_logp, q_logp, top_k):
    """[num_nodes] RKL(n): reverse KL(q || p) over the draft's top_k allowed tokens."""
    k = min(top_k, q_logp.shape[-1])
    idx = q_logp.detach().topk(k, dim=-1).indices
    q_sel = q_logp.gather(-1, idx)
    p_sel = p_logp.gather(-1, idx)
    # A padded column can be picked when a node has fewer than k tokens: drop it in both.
    keep = torch.isfinite(q_sel) & torch.isfinite(p_sel)
    q_sel = torch.where(keep, q_sel, torch.full_like(q_sel, NEG_INF))
    p_sel = torch.where(keep, p_sel, torch.full_like(p_sel, NEG_INF))
    q_hat = _renormalise(q_sel)
    p_hat = _renormalise(p_sel)
    return _xlogy_rows(q_hat, q_hat, p_hat)


def density_regulariser(q_seq):
    """[num_prompts] PD: minus the mean draft log-probability of the target's top-K beams."""
    finite = torch.isfinite(q_seq)
    total = torch.where(finite, q_seq, torch.zeros_like(q_seq)).sum(dim=-1)
    return -total / finite.sum(dim=-1).clamp(min=1)


def sequence_tv(p_seq, q_seq):
    """[num_prompts] TV between target and draft over the target's top-K beams (renormalised)."""
    p = _renormalise(p_seq)
    q = _renormalise(q_seq)
    finite = torch.isfinite(p)
    diff = torch.where(finite, p.exp() - q.exp(), torch.zeros_like(p))
    return 0.5 * diff.abs().sum(dim=-1)


def self_check():
    """Checks the losses on hand-made distributions; raises AssertionError on a failure."""
    torch.manual_seed(0)
    inf = NEG_INF

    def logs(*rows):
        return torch.tensor([[math.log(v) if v > 0 else inf for v in r] for r in rows])

    p = logs([0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25])
    # KD: 0 for identical distributions, >= 0, equal to the closed form otherwise.
    assert forward_kl(p, p).abs().max() < 1e-6
    q = logs([0.2, 0.3, 0.5, 0.0], [0.7, 0.1, 0.1, 0.1])
    kd = forward_kl(p, q)
    want0 = 0.5 * math.log(0.5 / 0.2) + 0.3 * math.log(1.0) + 0.2 * math.log(0.2 / 0.5)
    want1 = sum(0.25 * math.log(0.25 / x) for x in (0.7, 0.1, 0.1, 0.1))
    assert abs(kd[0] - want0) < 1e-5 and abs(kd[1] - want1) < 1e-5, kd
    # KD against a draft that puts mass outside the allowed tokens is still >= 0 (here: the
    # draft's allowed-token probabilities are half of p's, so KD = log 2).
    half = p + math.log(0.5)
    assert torch.allclose(forward_kl(p, half), torch.full((2,), math.log(2.0)), atol=1e-6)
    # RKL: 0 when q equals p on the draft's top-k (up to a common factor), > 0 otherwise.
    assert restricted_reverse_kl(p, p, 2).abs().max() < 1e-6
    assert restricted_reverse_kl(p, half, 3).abs().max() < 1e-6
    r = restricted_reverse_kl(p, q, 2)
    # Row 0: the draft's top-2 are tokens 2 (0.5) and 1 (0.3); renormalised q = (5/8, 3/8),
    # p = (0.2/0.5, 0.3/0.5) = (2/5, 3/5).
    want = 5 / 8 * math.log((5 / 8) / (2 / 5)) + 3 / 8 * math.log((3 / 8) / (3 / 5))
    assert abs(r[0] - want) < 1e-5 and r[0] > 0, r
    # Equal on the draft's top-k but different elsewhere: 0 (the restriction at work).
    q2 = logs([0.5, 0.3, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25])
    assert restricted_reverse_kl(p, q2, 2).abs().max() < 1e-6
    assert restricted_reverse_kl(p, q2, 3)[0] > 1e-4
    for _ in range(20):
        a = torch.log_softmax(torch.randn(5, 7), -1)
        b = torch.log_softmax(torch.randn(5, 7), -1)
        assert (forward_kl(a, b) >= -1e-6).all()
        assert (restricted_reverse_kl(a, b, 3) >= -1e-6).all()
    # TV: 0 for identical (and proportional) sequence scores, 1 for disjoint mass, in [0, 1].
    s = logs([0.4, 0.1, 0.05])
    assert sequence_tv(s, s).abs().max() < 1e-6
    assert sequence_tv(s, s - 3.0).abs().max() < 1e-6
    t = sequence_tv(logs([0.5, 0.5]), logs([1e-30, 1.0]))
    assert abs(t[0] - 0.5) < 1e-6, t
    assert abs(sequence_tv(logs([1.0, 1e-40]), logs([1e-40, 1.0]))[0] - 1.0) < 1e-6
    for _ in range(20):
        v = sequence_tv(torch.randn(3, 10), torch.randn(3, 10))
        assert ((v >= 0) & (v <= 1 + 1e-6)).all()
    # Padding (-inf) columns are ignored.
    padded = torch.tensor([[math.log(0.4), math.log(0.1), inf]])
    assert abs(sequence_tv(padded, torch.tensor([[math.log(0.1), math.log(0.4), inf]]))[0]
               - 0.6) < 1e-6
    # PD: minus the mean log-probability, padding ignored; gradients flow to q.
    q_seq = torch.tensor([[math.log(0.5), math.log(0.25), inf]], requires_grad=True)
    pd = density_regulariser(q_seq)
    assert abs(pd[0] - (math.log(2) + math.log(4)) / 2) < 1e-6
    pd.sum().backward()
    assert torch.allclose(q_seq.grad, torch.tensor([[-0.5, -0.5, 0.0]]))
    # Gradients of the step losses are finite with padding present.
    qg = q.clone().requires_grad_(True)
    (forward_kl(p, qg).sum() + restricted_reverse_kl(p, qg, 3).sum()).backward()
    assert torch.isfinite(qg.grad).all()
    return True
