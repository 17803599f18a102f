"""Distillation loss terms against hand computations, and the three teacher-weighting modes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lakd.distill.losses import (
    WEIGHTING_MODES,
    EmbeddingProjections,
    distillation_loss,
    route_matrix,
    teacher_weights,
)

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
    for mode in WEIGHTING_MODES:
        w = teacher_weights(mode, STUDENT, TEACHERS[:1], torch.tensor([0, -1]), [None], LANGS)
        assert w.tolist() == [[1.0], [1.0]]


def test_cosine_weights_match_the_formula_and_carry_no_gradient():
    s = STUDENT.clone().requires_grad_(True)
    tau = 0.25
    w = teacher_weights("cosine-sample", s, TEACHERS, torch.tensor([0, 1]), ["en", "fi"], LANGS, tau=tau)
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


def published_mtkd_loss(student_logits, teacher_logits_list, labels, temperature=5.0, lambda_param=0.25):
    """A literal transcription of aalto-speech/mtkd4ser utils.train_mtkd (and train_kd with one teacher)."""
    loss_fn_ce = torch.nn.CrossEntropyLoss()
    loss_fn_kl = torch.nn.KLDivLoss(reduction="mean")

    def calculate_cosine_similarity(tensor1, tensor2):
        tensor1_flat = tensor1.view(tensor1.size(0), -1)
        tensor2_flat = tensor2.view(tensor2.size(0), -1)
        return F.cosine_similarity(tensor1_flat, tensor2_flat, dim=1).mean()

    student_outputs_soft = F.log_softmax(student_logits / temperature, dim=-1)
    losses, sims = [], []
    for teacher_outputs in teacher_logits_list:
        teacher_outputs_soft = F.softmax(teacher_outputs / temperature, dim=-1)
        sims.append(calculate_cosine_similarity(student_logits, teacher_outputs))
        losses.append(loss_fn_kl(student_outputs_soft, teacher_outputs_soft) * (temperature**2))
    if len(teacher_logits_list) == 1:
        loss_kl = losses[0]
    else:
        weights = F.softmax(torch.tensor(sims) / 0.25, dim=-1)
        loss_kl = sum(w * l for w, l in zip(weights, losses))
    loss_ce = loss_fn_ce(student_logits, labels)
    return (1.0 - lambda_param) * loss_ce + lambda_param * loss_kl


@pytest.mark.parametrize("n_teachers, lam", [(3, 0.25), (1, 0.75)])
def test_published_preset_matches_the_authors_code_loss_and_gradient(n_teachers, lam):
    """cosine-batch + kl_reduction=mean + T=5 reproduces MTKD (λ=0.25) and KD (λ=0.75) to 1e-6, gradient included."""
    g = torch.Generator().manual_seed(3)
    b, c = 6, 4
    student = torch.randn(b, c, generator=g, dtype=torch.float64) * 2
    teachers = torch.randn(n_teachers, b, c, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, c, (b,), generator=g)

    s_ref = student.clone().requires_grad_(True)
    ref = published_mtkd_loss(s_ref, list(teachers), labels, temperature=5.0, lambda_param=lam)
    ref.backward()

    s = student.clone().requires_grad_(True)
    w = teacher_weights("cosine-batch", s, teachers, None, [None] * n_teachers, LANGS, tau=0.25)
    assert torch.allclose(w, w[:1].expand_as(w))  # one weight vector for the whole batch
    out = distillation_loss(s, teachers, labels, w, temperature=5.0, kd_weight=lam, kl_reduction="mean")
    out["loss"].backward()
    assert out["loss"].item() == pytest.approx(ref.item(), abs=1e-6)
    assert torch.allclose(s.grad.double(), s_ref.grad, atol=1e-6)


def test_cosine_batch_and_cosine_sample_differ_and_batch_weights_are_the_mean_agreement():
    w_s = teacher_weights("cosine-sample", STUDENT, TEACHERS, None, [None, None], LANGS, tau=0.25)
    w_b = teacher_weights("cosine-batch", STUDENT, TEACHERS, None, [None, None], LANGS, tau=0.25)
    cos = F.cosine_similarity(STUDENT.unsqueeze(0), TEACHERS, dim=-1)  # [K, B]
    assert torch.allclose(w_s, torch.softmax(cos.T / 0.25, dim=-1))
    assert torch.allclose(w_b, torch.softmax(cos.mean(1) / 0.25, dim=-1).expand(2, 2))
    assert not torch.allclose(w_s, w_b)


def test_old_cosine_name_is_refused_with_the_two_new_names():
    with pytest.raises(ValueError, match="cosine-sample .* cosine-batch"):
        teacher_weights("cosine", STUDENT, TEACHERS, None, [None, None], LANGS)


def test_mean_kl_reduction_is_the_batchmean_kl_divided_by_classes():
    w = torch.full((2, 2), 0.5)
    a = distillation_loss(STUDENT, TEACHERS, LABELS, w, temperature=2.0, kd_weight=1.0)
    m = distillation_loss(STUDENT, TEACHERS, LABELS, w, temperature=2.0, kd_weight=1.0, kl_reduction="mean")
    assert m["kl"].item() == pytest.approx(a["kl"].item() / 3, rel=1e-6)
    with pytest.raises(ValueError, match="kl_reduction"):
        distillation_loss(STUDENT, TEACHERS, LABELS, w, temperature=2.0, kd_weight=1.0, kl_reduction="sum")
