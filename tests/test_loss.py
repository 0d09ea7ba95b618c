# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
import math

import pytest
import torch

from trl_presafety import SafetyHead, SafetyHeadConfig, gather_anchor_states, presafety_loss
from trl_presafety.anchors import (
    ANCHOR_REGISTRY,
    MISSING_LABEL,
    MISSING_POSITION,
    AnchorSpec,
    Boundary,
    check_anchor,
    find_subsequence,
    locate_anchor,
    normalize_label,
)
from trl_presafety.modeling import presafety_bce


def naive_loss(hidden, index, labels, head, pooling, span_start, pos_weight, num_items):
    """Per-example loop with the BCE written out: the reference the vectorized code must match."""
    total = 0.0
    for k, (row, col) in enumerate(index.tolist()):
        if pooling == "last":
            h = hidden[row, col]
        else:
            h = hidden[row, span_start[k] : col + 1].float().mean(0).to(hidden.dtype)
        z = head(h[None]).float()[0]
        y = labels[k].float()
        w = 1.0 if pos_weight is None else pos_weight
        # BCE with logits, in its numerically stable form
        total = total + (w * y * torch.nn.functional.softplus(-z) + (1 - y) * torch.nn.functional.softplus(z))
    return total / num_items


@pytest.mark.parametrize("batch,seq,hidden", [(1, 1, 8), (3, 7, 5), (4, 33, 16)])
@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("head_type", ["linear", "mlp"])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_presafety_loss_matches_naive_reference(batch, seq, hidden, pooling, head_type, dtype, atol):
    gen = torch.Generator().manual_seed(batch * 100 + seq)
    states = torch.randn(batch, seq, hidden, generator=gen).to(dtype)
    n = batch + 1
    rows = torch.randint(0, batch, (n,), generator=gen)
    cols = torch.randint(0, seq, (n,), generator=gen)
    index = torch.stack([rows, cols], dim=1)
    span_start = torch.stack([torch.randint(0, int(c) + 1, (1,), generator=gen)[0] for c in cols])
    labels = torch.rand(n, generator=gen)  # soft labels
    labels[0] = 1.0
    torch.manual_seed(0)
    head = SafetyHead(SafetyHeadConfig(hidden_size=hidden, head_type=head_type)).to(dtype)
    for pos_weight in (None, 3.0):
        got = presafety_loss(states, index, labels, head, pooling, span_start, pos_weight, num_items=7)
        want = naive_loss(states, index, labels, head, pooling, span_start, pos_weight, 7)
        torch.testing.assert_close(got, want.to(got.dtype), atol=atol, rtol=atol)


def test_bce_values_and_gradient():
    logits = torch.tensor([0.0, 2.0, -1.0], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 0.25])
    losses = presafety_bce(logits, labels)
    expected = [
        math.log(2.0),
        math.log1p(math.exp(2.0)),
        0.25 * math.log1p(math.exp(1.0)) + 0.75 * math.log1p(math.exp(-1.0)),
    ]
    torch.testing.assert_close(losses, torch.tensor(expected))
    losses.sum().backward()
    # d/dz BCE = sigmoid(z) - y
    torch.testing.assert_close(logits.grad, torch.sigmoid(logits.detach()) - labels)


def test_gather_anchor_states_mean_is_span_average():
    states = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    index = torch.tensor([[0, 4], [1, 2]])
    span = torch.tensor([1, 0])
    out = gather_anchor_states(states, index, "mean", span)
    torch.testing.assert_close(out[0], states[0, 1:5].mean(0))
    torch.testing.assert_close(out[1], states[1, 0:3].mean(0))
    torch.testing.assert_close(gather_anchor_states(states, index, "last"), states[[0, 1], [4, 2]])
    with pytest.raises(ValueError, match="span_start"):
        gather_anchor_states(states, index, "mean")


@pytest.mark.parametrize(
    "value,expected",
    [
        (1, 1.0),
        (0, 0.0),
        (True, 1.0),
        (False, 0.0),
        (0.25, 0.25),
        (None, MISSING_LABEL),
        (-100, MISSING_LABEL),
        (-100.0, MISSING_LABEL),
        (float("nan"), MISSING_LABEL),
    ],
)
def test_normalize_label(value, expected):
    assert normalize_label(value, "safety_label", 0) == expected


@pytest.mark.parametrize(
    "value,error,match",
    [(2, ValueError, "out of range"), (1.5, ValueError, r"\[0, 1\]"), ("yes", TypeError, "has type str")],
)
def test_normalize_label_errors_name_column_index_and_fix(value, error, match):
    with pytest.raises(error, match=match) as info:
        normalize_label(value, "my_label", 7)
    assert "my_label" in str(info.value) and "index 7" in str(info.value)


def _spec(kind, think=(9,), blank=(0,)):
    return AnchorSpec(kind=kind, think_ids=tuple(think) if kind == "think_end" else (), blank_ids=frozenset(blank))


def test_anchor_rules():
    think = _spec("think_end")
    # R1 style: the generation prompt (from index 2) ends with the tag
    ids = [1, 2, 3, 9, 5, 6, 7]
    assert locate_anchor(ids, Boundary(4, 2), _spec("prompt_end")) == 3
    assert locate_anchor(ids, Boundary(4, 2), think) == 3
    # ... and with a "\n" (blank token 0) after the tag; a text prompt (no generation start) likewise
    ids = [1, 2, 3, 9, 0, 5, 6]
    assert locate_anchor(ids, Boundary(5, 2), _spec("prompt_end")) == 4
    assert locate_anchor(ids, Boundary(5, 2), think) == 3
    assert locate_anchor(ids, Boundary(5), think) == 3
    # Qwen3 style: the response opens the tag
    ids = [1, 2, 3, 9, 5, 6]
    assert locate_anchor(ids, Boundary(3, 2), _spec("prompt_end")) == 2
    assert locate_anchor(ids, Boundary(3, 2), think) == 3
    assert locate_anchor(ids, Boundary(3), think) == 3
    # A tag before the generation prompt (typed in a user turn) is text: never the anchor
    ids = [1, 9, 4, 2, 3, 5, 6]
    assert locate_anchor(ids, Boundary(5, 3), think) == MISSING_POSITION
    assert locate_anchor([1, 9, 4, 2, 3, 9, 6], Boundary(5, 3), think) == 5  # the response's own tag
    # Text data: a tag that does not end the prompt side is text, too
    assert locate_anchor([1, 9, 4, 2, 3, 5], Boundary(5), think) == MISSING_POSITION
    # IPO style: the boundary is where the model's output starts, not where the pair's prompt ends
    ids = [1, 2, 9, 4, 4, 9, 5]
    assert locate_anchor(ids, Boundary(3, 1), think) == 2
    assert locate_anchor(ids, Boundary(3, 1), _spec("prompt_end")) == 2
    # A multi-token tag "<think>\n" anchors on its last token
    assert locate_anchor([1, 9, 10, 4], Boundary(1, 1), _spec("think_end", think=(9, 10))) == 2
    # Not found, or no boundary inside the sequence
    assert locate_anchor([1, 2, 3], Boundary(2, 1), think) == MISSING_POSITION
    assert locate_anchor([1, 2, 3], Boundary(0), _spec("prompt_end")) == MISSING_POSITION
    assert locate_anchor([1, 2, 3], Boundary(4), _spec("prompt_end")) == MISSING_POSITION
    assert find_subsequence([1, 9, 1, 9], [9]) == [1, 3]


def test_a_new_anchor_kind_is_one_registered_function(monkeypatch):
    def first_response_token(ids, boundary, spec):
        return boundary.response_start

    monkeypatch.setitem(ANCHOR_REGISTRY, "first_response_token", first_response_token)
    assert locate_anchor([1, 2, 3, 4], Boundary(2, 1), AnchorSpec(kind="first_response_token")) == 2
    # Every place that takes an anchor kind checks it against the registry: the new kind is accepted everywhere
    check_anchor("first_response_token")
    assert SafetyHeadConfig(hidden_size=4, anchor="first_response_token").anchor == "first_response_token"
