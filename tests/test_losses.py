"""Distillation loss terms against hand computations, and the three teacher-weighting modes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lakd.distill.losses import EmbeddingProjections, distillation_loss, route_matrix, teacher_weights

LANGS = ["en", "fi", "fr"]
STUDENT = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
TEACHERS = torch.tensor([[[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]], [[-1.0, 2.0, 0.5], [0.3, 0.3, -2.0]]])  # [K=2, B=2, C=3]
LABELS = torch.tensor([0, 2])


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_kl_term_matches_hand_computation_with_t_squared():
    T, w = 2.0, np.array([[0.25, 0.75], [1.0, 0.0]])
    out = distillation_loss(
        STUDENT, TEACHERS, LABELS, torch.tensor(w, dtype=torch.float32), temperature=T, kd_weight=0.4
    )
    s, t = STUDENT.numpy().astype(np.float64), TEACHERS.numpy().astype(np.float64)
    ps, pt = np_softmax(s / T), np_softmax(t / T)
    kl = (pt * (np.log(pt) - np.log(ps)[None])).sum(-1)  # [K, B], summed over classes (not averaged)
    expected_kl = T * T * (w * kl.T).sum(-1).mean()
    expected_ce = -np.log(np_softmax(s)[[0, 1], [0, 2]]).mean()
    assert out["kl"].item() == pytest.approx(expected_kl, rel=1e-5)
    assert out["ce"].item() == pytest.approx(expected_ce, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.6 * expected_ce + 0.4 * expected_kl, rel=1e-5)
    assert out["embed"].item() == 0.0


def test_kd_weight_zero_is_plain_cross_entropy_and_class_weights_apply():
    w = torch.full((2, 2), 0.5)
    out = distillation_loss(STUDENT, TEACHERS, LABELS, w, temperature=5.0, kd_weight=0.0)
    assert torch.equal(out["loss"], F.cross_entropy(STUDENT, LABELS))
    cw = torch.tensor([1.0, 1.0, 3.0])
    out = distillation_loss(STUDENT, TEACHERS, LABELS, w, temperature=5.0, kd_weight=0.0, class_weights=cw)
    assert torch.allclose(out["loss"], F.cross_entropy(STUDENT, LABELS, weight=cw))


def test_kl_is_zero_when_student_equals_teacher():
    same = STUDENT.unsqueeze(0).repeat(2, 1, 1)
    out = distillation_loss(STUDENT, same, LABELS, torch.full((2, 2), 0.5), temperature=3.0, kd_weight=1.0)
    assert abs(out["kl"].item()) < 1e-6


def test_gradient_reaches_student_only():
    s = STUDENT.clone().requires_grad_(True)
    t = TEACHERS.clone().requires_grad_(True)
    out = distillation_loss(s, t, LABELS, torch.full((2, 2), 0.5), temperature=2.0, kd_weight=0.5)
    out["loss"].backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_route_picks_the_samples_own_teacher_and_falls_back_to_uniform():
    t_langs = ["en", "fi"]  # no teacher for fr
    w = teacher_weights(
        "route", STUDENT.repeat(2, 1), TEACHERS.repeat(1, 2, 1), torch.tensor([1, 0, 2, -1]), t_langs, LANGS
    )
    assert w.tolist() == [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5]]
    table = route_matrix(["en", "en", "fi"], LANGS)  # two teachers of one language share its samples
    assert table.tolist()[0] == [0.5, 0.5, 0.0] and table.shape == (4, 3)


def test_single_multilingual_teacher_gets_all_the_weight():
    for mode in ("route", "cosine", "mean"):
        w = teacher_weights(mode, STUDENT, TEACHERS[:1], torch.tensor([0, -1]), [None], LANGS)
        assert w.tolist() == [[1.0], [1.0]]


def test_cosine_weights_match_the_formula_and_carry_no_gradient():
    s = STUDENT.clone().requires_grad_(True)
    tau = 0.25
    w = teacher_weights("cosine", s, TEACHERS, torch.tensor([0, 1]), ["en", "fi"], LANGS, tau=tau)
    sn, tn = STUDENT.numpy(), TEACHERS.numpy()
    cos = (sn[None] * tn).sum(-1) / (np.linalg.norm(sn, axis=-1)[None] * np.linalg.norm(tn, axis=-1))  # [K, B]
    expected = np_softmax(cos.T / tau)
    assert np.allclose(w.numpy(), expected, atol=1e-6)
    assert not w.requires_grad
    assert torch.allclose(w.sum(-1), torch.ones(2))


def test_mean_is_uniform_and_bad_mode_is_an_error():
    w = teacher_weights("mean", STUDENT, TEACHERS, None, ["en", "fi"], LANGS)
    assert w.tolist() == [[0.5, 0.5], [0.5, 0.5]]
    with pytest.raises(ValueError, match="route, cosine, mean|one of"):
        teacher_weights("max", STUDENT, TEACHERS, None, ["en", "fi"], LANGS)


def test_embedding_term():
    e = torch.randn(2, 4)
    w = torch.tensor([[0.3, 0.7], [0.5, 0.5]])
    out = distillation_loss(
        STUDENT, TEACHERS, LABELS, w, 2.0, 0.5, student_embed=e, teacher_embeds=[e.clone(), e * 3], embed_weight=1.0
    )
    assert abs(out["embed"].item()) < 1e-6  # identical directions: 1 - cos = 0
    opposite = distillation_loss(
        STUDENT, TEACHERS, LABELS, w, 2.0, 0.5, student_embed=e, teacher_embeds=[-e, e], embed_weight=0.1
    )
    assert opposite["embed"].item() == pytest.approx(((0.3 * 2.0) + (0.5 * 2.0)) / 2, rel=1e-5)
    assert opposite["loss"].item() == pytest.approx(
        0.5 * opposite["ce"].item() + 0.5 * opposite["kl"].item() + 0.1 * opposite["embed"].item(), rel=1e-5
    )


def test_embedding_projections_for_different_teacher_sizes():
    torch.manual_seed(0)
    proj = EmbeddingProjections(4, [4, 6])
    assert isinstance(proj[0], torch.nn.Identity) and proj[1].out_features == 6
    e = torch.randn(2, 4, requires_grad=True)
    out = distillation_loss(
        STUDENT,
        TEACHERS,
        LABELS,
        torch.full((2, 2), 0.5),
        2.0,
        0.5,
        student_embed=e,
        teacher_embeds=[torch.randn(2, 4), torch.randn(2, 6)],
        embed_weight=1.0,
        projections=proj,
    )
    out["loss"].backward()
    assert proj[1].weight.grad is not None and e.grad is not None
    with pytest.raises(ValueError, match="EmbeddingProjections"):
        distillation_loss(
            STUDENT,
            TEACHERS,
            LABELS,
            torch.full((2, 2), 0.5),
            2.0,
            0.5,
            student_embed=e,
            teacher_embeds=[torch.randn(2, 4), torch.randn(2, 6)],
            embed_weight=1.0,
        )


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"\[K, B, C\]"):
        distillation_loss(STUDENT, TEACHERS[0], LABELS, torch.ones(2, 1), 2.0, 0.5)
    with pytest.raises(ValueError, match=r"weights"):
        distillation_loss(STUDENT, TEACHERS, LABELS, torch.ones(2, 3), 2.0, 0.5)
