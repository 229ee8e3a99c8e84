"""torchexplain.robust: FGSM, PGD, AttackComparator, MinParamPerturbation.

Oracles: Captum 0.9's captum.robust on the same small models and arguments (values
within 1e-5; random starts from the same global seed); FGSM's step derived by hand
on a linear model; PGD's invariants (inside its ball and the bounds); the model left
as it was; one forward per step for the whole batch; errors that name the argument.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

import torchexplain
import torchexplain.robust as ours
from torchexplain import methods
from torchexplain.robust.explain import FGSMAttribution, PGDAttribution

captum_robust = pytest.importorskip("captum.robust")

TOL = dict(atol=1e-5, rtol=0)
# Captum's FGSM warns that it set requires_grad on the inputs
pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor .* did not already require gradients")


def _classifier(seed=0, d=6, k=3):
    """A softmax MLP: outputs are probabilities, as Captum's default -log loss wants."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, k), nn.Softmax(dim=1)).eval()


class TwoInputs(nn.Module):
    """Probabilities from two inputs and an optional extra argument."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(2, 3)

    def forward(self, x1, x2, scale=1.0):
        return torch.softmax(scale * (self.a(x1) + self.b(x2).tanh()), dim=1)


def _conv_net():
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 5), nn.Softmax(dim=1)).eval()


def _x(n=5, d=6, seed=3):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _close(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for u, v in zip(a, b):
            _close(u, v)
        return
    torch.testing.assert_close(a, b, **TOL)


def test_every_captum_robust_name_is_importable_from_torchexplain():
    for name in captum_robust.__all__:
        assert isinstance(getattr(ours, name), type), name
    assert sorted(ours.__all__) == sorted(captum_robust.__all__)
    assert issubclass(ours.FGSM, ours.Perturbation) and issubclass(ours.PGD, ours.Perturbation)


# -- FGSM against Captum -------------------------------------------------------------
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("target", [1, [0, 2, 1, 1, 0], "tensor"])
def test_fgsm_matches_captum_for_target_forms(targeted, target):
    model, x = _classifier(), _x()
    target = torch.tensor([2, 0, 1, 2, 1]) if target == "tensor" else target
    got = ours.FGSM(model).perturb(x, 0.1, target, targeted=targeted)
    want = captum_robust.FGSM(model).perturb(x, 0.1, target, targeted=targeted)
    _close(got, want)
    assert not torch.equal(got, x)


def test_fgsm_matches_captum_with_mask_bounds_loss_and_tuple_inputs():
    model, x = _classifier(), _x()
    mask = (torch.rand(5, 6, generator=torch.Generator().manual_seed(0)) > 0.5).int()
    for kwargs in ({"mask": mask}, {}):
        _close(ours.FGSM(model, lower_bound=-0.5, upper_bound=0.7).perturb(x, 0.3, 1, **kwargs),
               captum_robust.FGSM(model, lower_bound=-0.5, upper_bound=0.7).perturb(x, 0.3, 1, **kwargs))
    logits = model[:3]
    loss = nn.CrossEntropyLoss(reduction="none")
    labels = torch.tensor([0, 1, 2, 0, 1])
    _close(ours.FGSM(logits, loss).perturb(x, 0.2, labels), captum_robust.FGSM(logits, loss).perturb(x, 0.2, labels))
    two = TwoInputs()
    x1, x2 = _x(4, 4, 5), _x(4, 2, 6)
    masks = (torch.ones(4, 4), torch.tensor([[1.0, 0.0]]))
    got = ours.FGSM(two).perturb((x1, x2), 0.05, [0, 1, 2, 0], (2.0,), mask=masks)
    want = captum_robust.FGSM(two).perturb((x1, x2), 0.05, [0, 1, 2, 0], (2.0,), mask=masks)
    _close(got, want)
    assert torch.equal(got[1][:, 1], x2[:, 1])  # masked out


@pytest.mark.parametrize("channels_last", [None, True])
def test_fgsm_and_pgd_on_images_match_captum_in_either_layout(channels_last, monkeypatch):
    from torchexplain import config

    monkeypatch.setattr(config, "channels_last", channels_last)
    model = _conv_net()
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    got = ours.FGSM(model).perturb(x, 0.05, [0, 1, 2, 3])
    _close(got, captum_robust.FGSM(model).perturb(x, 0.05, [0, 1, 2, 3]))
    pgd = ours.PGD(model).perturb(x, 0.1, 0.03, 4, [0, 1, 2, 3])
    _close(pgd, captum_robust.PGD(model).perturb(x, 0.1, 0.03, 4, [0, 1, 2, 3]))
    assert got.is_contiguous() and pgd.is_contiguous()


# -- FGSM by hand ----------------------------------------------------------------------
def test_fgsm_step_is_epsilon_times_the_sign_of_a_known_gradient():
    linear = nn.Linear(4, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.0], [0.5, 0.5, 0.5, 0.5]]))
        linear.bias.zero_()
    x = torch.tensor([[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 2.0, 0.0]])
    score = lambda out, target: out[:, target]  # noqa: E731  the loss is the class-0 score: gradient = weight row 0
    got = ours.FGSM(linear, score).perturb(x, 0.25, 0)
    step = torch.tensor([[0.25, -0.25, 0.25, 0.0]]).expand(2, 4)
    torch.testing.assert_close(got - x, step)
    assert torch.equal(got[:, 3], x[:, 3])  # a zero gradient leaves the value
    targeted = ours.FGSM(linear, score).perturb(x, 0.25, 0, targeted=True)
    torch.testing.assert_close(x - targeted, step)
    # cross-entropy: the sign of W^T (softmax - onehot), with autograd by hand
    ce = nn.CrossEntropyLoss(reduction="none")
    labels = torch.tensor([1, 0])
    leaf = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(ce(linear(leaf), labels).sum(), leaf)[0]
    torch.testing.assert_close(ours.FGSM(linear, ce).perturb(x, 0.1, labels) - x, 0.1 * grad.sign())


# -- PGD against Captum ----------------------------------------------------------------
@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_matches_captum(norm, targeted):
    model, x = _classifier(), _x()
    args = (x, 0.3, 0.07, 6, [0, 1, 2, 0, 1])
    got = ours.PGD(model, lower_bound=-1.5, upper_bound=1.5).perturb(*args, targeted=targeted, norm=norm)
    want = captum_robust.PGD(model, lower_bound=-1.5, upper_bound=1.5).perturb(*args, targeted=targeted, norm=norm)
    _close(got, want)


def test_pgd_matches_captum_with_masks_tuple_inputs_and_loss():
    two = TwoInputs()
    x1, x2 = _x(4, 4, 5), _x(4, 2, 6)
    masks = ((torch.arange(4) % 2).float().expand(4, 4), torch.ones(4, 2))
    for norm in ("Linf", "L2"):
        kwargs = dict(additional_forward_args=(0.5,), norm=norm, mask=masks)
        got = ours.PGD(two).perturb((x1, x2), 0.2, 0.05, 5, 1, **kwargs)
        _close(got, captum_robust.PGD(two).perturb((x1, x2), 0.2, 0.05, 5, 1, **kwargs))
        assert torch.equal(got[0][:, ::2], x1[:, ::2])
    logits, loss = _classifier()[:3], nn.CrossEntropyLoss(reduction="none")
    x, labels = _x(), torch.tensor([0, 1, 2, 0, 1])
    _close(ours.PGD(logits, loss).perturb(x, 0.3, 0.1, 4, labels, norm="L2"),
           captum_robust.PGD(logits, loss).perturb(x, 0.3, 0.1, 4, labels, norm="L2"))


@pytest.mark.parametrize("norm,n", [("Linf", 5), ("L2", 1)])
def test_pgd_random_start_draws_what_captum_draws_from_the_global_seed(norm, n):
    # (Captum's L2 start scales the wrong dimension for more than one example: n=1 here)
    model, x = _classifier(), _x(n)
    torch.manual_seed(11)
    got = ours.PGD(model).perturb(x, 0.3, 0.05, 3, 0, random_start=True, norm=norm)
    torch.manual_seed(11)
    want = captum_robust.PGD(model).perturb(x, 0.3, 0.05, 3, 0, random_start=True, norm=norm)
    _close(got, want)


# -- PGD invariants --------------------------------------------------------------------
@pytest.mark.parametrize("random_start", [False, True])
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_stays_inside_its_ball_and_bounds(norm, random_start):
    model, x = _classifier(d=10), torch.rand(6, 10, generator=torch.Generator().manual_seed(0))
    radius, low, high = 0.5, 0.0, 1.0
    out = ours.PGD(model, lower_bound=low, upper_bound=high).perturb(
        x, radius, 0.2, 8, 1, norm=norm, random_start=random_start, seed=0)
    diff = out - x
    size = diff.abs().amax(1) if norm == "Linf" else diff.norm(dim=1)
    assert bool((size <= radius * (1 + 1e-6)).all()) and float(size.max()) > 0.9 * radius  # it reaches the border
    assert float(out.min()) >= low and float(out.max()) <= high
    if random_start:  # the random point alone (step_num=0) is inside the ball of every example
        start = ours.PGD(model).perturb(x, radius, 0.2, 0, 1, norm=norm, random_start=True, seed=1)
        d = start - x
        size = d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)
        assert bool((size <= radius * (1 + 1e-6)).all()) and bool((size > 0).all())


def test_pgd_random_start_is_seeded_by_generator_or_seed_and_leaves_the_global_rng():
    model, x = _classifier(), _x()
    pgd = ours.PGD(model)
    state = torch.random.get_rng_state()
    a = pgd.perturb(x, 0.3, 0.05, 2, 0, random_start=True, seed=5)
    b = pgd.perturb(x, 0.3, 0.05, 2, 0, random_start=True, generator=torch.Generator().manual_seed(5))
    c = pgd.perturb(x, 0.3, 0.05, 2, 0, random_start=True, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_pgd_runs_one_forward_per_step_for_the_whole_batch_and_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3), nn.Softmax(dim=1))
    model.train()
    model[0].bias.requires_grad_(False)
    model[3].weight.grad = torch.ones(3, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sizes = []
    model.register_forward_pre_hook(lambda m, inp: sizes.append(inp[0].shape[0]))
    ours.PGD(model).perturb(_x(7), 0.2, 0.05, 4, 1)
    assert sizes == [7] * 4
    sizes.clear()
    ours.FGSM(model).perturb(_x(7), 0.2, 1)
    assert sizes == [7]
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [True, False, True, True, True, True]
    assert torch.equal(model[3].weight.grad, torch.ones(3, 8)) and model[0].weight.grad is None
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_output_selector_picks_the_attacked_tensor_of_a_tuple_output():
    model, x = _classifier(), _x()
    pair = lambda inp: (model(inp), inp.sum())  # noqa: E731
    want = ours.PGD(model).perturb(x, 0.3, 0.1, 3, 1)
    _close(ours.PGD(pair, output_selector=0).perturb(x, 0.3, 0.1, 3, 1), want)
    nll = lambda out, y: -torch.log(out[:, y])  # noqa: E731
    _close(ours.FGSM(pair, nll, output_selector=0).perturb(x, 0.1, 1), ours.FGSM(model).perturb(x, 0.1, 1))
    with pytest.raises(ValueError, match="the model returned a tuple; pass output_selector"):
        ours.FGSM(pair).perturb(x, 0.1, 1)


def test_a_predicted_target_is_fixed_on_the_clean_inputs():
    model, x = _classifier(), _x()
    top = model(x).argmax(1)
    _close(ours.PGD(model).perturb(x, 0.5, 0.2, 5, "predicted"), ours.PGD(model).perturb(x, 0.5, 0.2, 5, top))


# -- AttackComparator and MinParamPerturbation against Captum ---------------------------
Result = collections.namedtuple("Result", "accuracy score")


def _metric(out, target, named=False):
    acc = (out.argmax(1) == target).float()
    score = out[:, target] if isinstance(target, int) else out.gather(1, target[:, None])[:, 0]
    return Result(acc, score) if named else (acc, score)


def _noise(inputs, std=0.3):
    return inputs + std * torch.randn_like(inputs)


def _comparator(lib, model, per_eval):
    comp = lib.AttackComparator(model, _metric)
    comp.add_attack(lib.FGSM(model), "FGSM", attack_kwargs={"epsilon": 0.2}, additional_attack_arg_names=["target"])
    comp.add_attack(_noise, "noise", num_attempts=3, attack_kwargs={"std": 0.5})
    comp.add_attack(lib.PGD(model), attack_kwargs={"radius": 0.3, "step_size": 0.1, "step_num": 3},
                    additional_attack_arg_names=["target"])
    return comp


@pytest.mark.parametrize("per_eval", [1, 3])
def test_attack_comparator_matches_captum(per_eval):
    model = _classifier()
    results = {}
    for lib in (ours, captum_robust):
        comp = _comparator(lib, model, per_eval)
        torch.manual_seed(0)
        first = comp.evaluate(_x(), perturbations_per_eval=per_eval, target=1)
        second = comp.evaluate(_x(seed=9), perturbations_per_eval=per_eval, target=torch.tensor([0, 1, 2, 0, 1]),
                               named=True)
        results[lib] = (first, second, comp.summary())
        comp.reset()
        assert comp.summary() == {}
    for got, want in zip(results[ours], results[captum_robust]):
        assert set(got) == set(want)
        for key in want:
            if isinstance(want[key], dict):
                # (Captum's order of "min" and "max" follows its set of stats, which varies with the hash seed)
                assert list(got[key]) == (["mean", "min", "max"] if len(want[key]) > 1 else ["mean"])
                assert set(got[key]) == set(want[key])
                for stat in want[key]:
                    assert type(got[key][stat]).__name__ == type(want[key][stat]).__name__
                    _close(tuple(got[key][stat]), tuple(want[key][stat]))
            else:
                _close(tuple(got[key]), tuple(want[key]))
    assert list(results[ours][2]) == ["Original", "FGSM", "noise Mean Attempt", "noise Min Attempt",
                                      "noise Max Attempt", "PGD"]


@pytest.mark.parametrize("mode", ["linear", "binary"])
@pytest.mark.parametrize("per_eval", [1, 4])
def test_min_param_perturbation_matches_captum(mode, per_eval):
    model = _classifier()
    x = _x(1, seed=4)
    label = int(model(x).argmax())
    found = {}
    for lib in (ours, captum_robust):
        search = lib.MinParamPerturbation(model, lib.FGSM(model), "epsilon", 0.0, 3.0, 0.05, mode=mode)
        found[lib] = search.evaluate(x, target=label, perturbations_per_eval=per_eval,
                                     attack_kwargs={"target": label})
    (got_x, got_eps), (want_x, want_eps) = found[ours], found[captum_robust]
    assert want_eps is not None and got_eps == pytest.approx(want_eps)
    _close(got_x, want_x)
    assert int(model(got_x).argmax()) != label


def test_min_param_perturbation_with_preprocessing_and_no_success():
    model = _classifier()
    x = _x(1, seed=4)
    label = int(model(x).argmax())
    for lib in (ours, captum_robust):
        search = lib.MinParamPerturbation(model, lambda inp, shift: inp + shift, "shift", 0, 1, 0.5,
                                          preproc_fn=lambda inp: inp * 0.0, apply_before_preproc=True)
        assert search.evaluate(x, target=label) == (None, None)  # the preprocessing erases every shift


@pytest.mark.parametrize("mode", ["linear", "binary"])
def test_min_param_perturbation_finds_the_hand_derived_threshold(mode):
    # scores (x, 0): class 0 while x >= 0; shifting x = 0.37 down by s fools the model first at s = 0.4
    model = lambda x: torch.cat([x, torch.zeros_like(x)], 1)  # noqa: E731
    search = ours.MinParamPerturbation(model, lambda inp, s: inp - s, "s", 0.0, 2.0, 0.1, mode=mode)
    x = torch.tensor([[0.37]])
    for per_eval in (1, 3, 50):
        attacked, s = search.evaluate(x, target=0, perturbations_per_eval=per_eval)
        assert s == pytest.approx(0.4) and float(attacked) == pytest.approx(-0.03)


def test_perturbation_is_a_callable_base():
    class Shift(ours.Perturbation):
        def perturb(self, inputs, by=1.0):
            return inputs + by

    assert torch.equal(Shift()(torch.zeros(2), by=2.0), torch.full((2,), 2.0))
    with pytest.raises(NotImplementedError, match="Perturbation must implement perturb"):
        ours.Perturbation()(torch.zeros(2))


# -- the attacks as attributions ---------------------------------------------------------
def test_fgsm_and_pgd_attributions_are_the_perturbations_away_from_the_class():
    logits = _classifier()[:3]
    x = _x()
    top = logits(x).argmax(1)
    ce = nn.CrossEntropyLoss(reduction="none")
    eps = 8 / 255 * float(x.max() - x.min())
    _close(FGSMAttribution(logits).attribute(x, target=top), ours.FGSM(logits, ce).perturb(x, eps, top) - x)
    pgd = PGDAttribution(logits).attribute(x)  # target None: the predicted classes
    _close(pgd, ours.PGD(logits, ce).perturb(x, eps, eps / 4, 10, top) - x)
    assert float(pgd.abs().max()) == pytest.approx(eps)
    # registered by name for explain(), but not listed among the attributions
    assert methods.resolve("fgsm").build is FGSMAttribution and methods.resolve("PGD").build is PGDAttribution
    assert "fgsm" not in methods.available() and "pgd" not in methods.available()
    assert methods.resolve("pgd").defaults(x) == {"radius": eps, "step_size": eps / 4, "step_num": 10}
    run = torchexplain.explain(logits, x, method=["pgd", "fgsm"], target="top1")
    _close(run.attributions["pgd"], pgd)
    _close(run.attributions["fgsm"], ours.FGSM(logits, ce).perturb(x, eps, top) - x)


# -- errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("call,match", [
    (lambda m, x: ours.FGSM(m).perturb(x, -0.1, 0), r"epsilon must be a number >= 0; got -0\.1"),
    (lambda m, x: ours.PGD(m).perturb(x, -1, 0.1, 3, 0), r"radius must be a number >= 0; got -1"),
    (lambda m, x: ours.PGD(m).perturb(x, 1, -0.1, 3, 0), r"step_size must be a number >= 0; got -0\.1"),
    (lambda m, x: ours.PGD(m).perturb(x, 1, 0.1, 0, 0), r"step_num must be an int >= 1 .*got 0 with random_start"),
    (lambda m, x: ours.PGD(m).perturb(x, 1, 0.1, 2.5, 0), r"step_num must be an int >= 1 .*got 2\.5"),
    (lambda m, x: ours.PGD(m).perturb(x, 1, 0.1, 2, 0, norm="L1"), r"norm must be one of 'Linf', 'L2'; got 'L1'"),
    (lambda m, x: ours.FGSM(m, lower_bound=1, upper_bound=0), r"lower_bound must be <= upper_bound.*got lower_"),
    (lambda m, x: ours.PGD(m, lower_bound=2.0, upper_bound=-2.0), r"lower_bound=2\.0, upper_bound=-2\.0"),
    (lambda m, x: ours.FGSM(m).perturb(x, 0.1, 0, mask=torch.ones(5, 3)), r"mask of shape \(5, 3\) does not"),
    (lambda m, x: ours.FGSM(m).perturb((x, x), 0.1, 0, mask=torch.ones(5, 6)), r"one tensor per input.*2 input"),
    (lambda m, x: ours.MinParamPerturbation(m, _noise, "std", 0, 1, 0.1, mode="ternary"),
     r"mode must be one of 'linear', 'binary'; got 'ternary'"),
    (lambda m, x: ours.MinParamPerturbation(m, _noise, "std", 2, 1, 0.1), r"arg_min must be smaller than arg_max"),
    (lambda m, x: ours.MinParamPerturbation(m, _noise, "std", 0, 1, 0), r"arg_step must be a number > 0; got 0"),
    (lambda m, x: ours.MinParamPerturbation(m, _noise, "std", 0, 1, 0.1, num_attempts=0),
     r"num_attempts must be an int >= 1; got 0"),
    (lambda m, x: ours.AttackComparator(m, _metric).evaluate(x, perturbations_per_eval=0, target=0),
     r"perturbations_per_eval must be an int >= 1; got 0"),
])
def test_bad_arguments_are_value_errors_that_name_them(call, match):
    with pytest.raises(ValueError, match=match):
        call(_classifier(), _x())


def test_type_errors_and_duplicate_attack_names():
    model = _classifier()
    with pytest.raises(TypeError, match="epsilon must be a real number; got str"):
        ours.FGSM(model).perturb(_x(), "0.1", 0)
    with pytest.raises(TypeError, match="forward_func must be callable"):
        ours.PGD(3)
    comp = ours.AttackComparator(model, _metric)
    comp.add_attack(_noise)
    with pytest.raises(ValueError, match="name must be unique among the added attacks; 'function' is already"):
        comp.add_attack(_noise)
    with pytest.raises(ValueError, match="target is required: the model output has 3 values per example"):
        ours.FGSM(model).perturb(_x(), 0.1, None)
