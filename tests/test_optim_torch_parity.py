"""descend's optimizers reproduce ``torch.optim`` step for step with the matching options,
and run unchanged on ``torch.Tensor`` params (dispatch through ``descend.backend``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from descend.backend import get_ops, namespace_of
from descend.optim import (
    OPTIMIZERS,
    ReduceOnPlateau,
    adagrad,
    adam,
    adamw,
    add_l2,
    apply_updates,
    chain,
    clip_by_global_norm,
    exponential,
    inverse_time,
    make_optimizer,
    momentum,
    nesterov,
    per_epoch,
    rmsprop,
    scale_by_adam,
    scale_by_learning_rate,
    sgd,
    step_decay,
    warmup_cosine,
)
from descend.optim.conventions import resolve

STEPS = 25
RTOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The tensors here are tiny: one thread avoids OpenMP spin-waits on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- a tiny problem whose gradients depend on the current params ----------------------------


def problem(seed=0, n=16, d=4, k=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n)
    params = {"W": rng.normal(scale=0.5, size=(d, k)), "b": rng.normal(scale=0.1, size=k)}
    return x, y, params


def softmax_grads(params, x, y):
    """Gradient of the mean softmax cross-entropy, by hand in NumPy."""
    z = x @ params["W"] + params["b"]
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    return {"W": x.T @ p, "b": p.sum(axis=0)}


def torch_loss(tparams, x, y):
    logits = torch.as_tensor(x) @ tparams["W"] + tparams["b"]
    return torch.nn.functional.cross_entropy(logits, torch.as_tensor(y))


def test_hand_gradient_matches_autograd():
    x, y, params = problem()
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    torch_loss(tparams, x, y).backward()
    grads = softmax_grads(params, x, y)
    for k in params:
        np.testing.assert_allclose(grads[k], tparams[k].grad.numpy(), rtol=1e-12, atol=1e-15)


def batches(n, steps_per_epoch):
    size = n // steps_per_epoch
    return [slice(i * size, (i + 1) * size) for i in range(steps_per_epoch)]


def run_parity(make_torch, descend_opt, *, epochs=STEPS, steps_per_epoch=1, make_scheduler=None, seed=0,
               rtol=RTOL, clip=None):
    """Train both side by side; compare the params after every step.

    ``clip``: torch clips with ``clip_grad_norm_`` before each step (``descend_opt``
    must clip itself); returns the gradient norms torch saw.
    """
    x, y, params = problem(seed)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    topt = make_torch(list(tparams.values()))
    scheduler = make_scheduler(topt) if make_scheduler else None
    state = descend_opt.init(params)
    step, norms = 0, []
    for _ in range(epochs):
        for batch in batches(len(y), steps_per_epoch):
            topt.zero_grad()
            torch_loss(tparams, x[batch], y[batch]).backward()
            if clip is not None:
                norms.append(float(torch.nn.utils.clip_grad_norm_(list(tparams.values()), clip)))
            topt.step()
            updates, state = descend_opt.update(softmax_grads(params, x[batch], y[batch]), state, params)
            params = apply_updates(params, updates)
            step += 1
            for k in params:
                np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=rtol, atol=1e-12,
                                           err_msg=f"step {step}, {k}")
        if scheduler is not None:
            scheduler.step()
    # the trajectory really moved
    _, _, start = problem(seed)
    assert max(np.abs(params[k] - start[k]).max() for k in params) > 1e-2
    return norms if clip is not None else params


PARITY = [
    ("SGD", lambda p: torch.optim.SGD(p, lr=0.5), lambda: sgd(0.5)),
    ("SGD-momentum", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
     lambda: momentum(0.1, 0.9, lr_inside=False)),
    # constant lr: the curriculum's lr-inside form gives the same trajectory
    ("SGD-momentum-lr_inside", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
     lambda: momentum(0.1, 0.9, lr_inside=True)),
    ("SGD-nesterov", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
     lambda: nesterov(0.1, 0.9, lr_inside=False)),
    ("SGD-nesterov-lr_inside", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
     lambda: nesterov(0.1, 0.9)),
    ("SGD-weight_decay", lambda p: torch.optim.SGD(p, lr=0.3, weight_decay=0.01),
     lambda: chain(add_l2(0.01), scale_by_learning_rate(0.3))),
    ("Adagrad", lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-10), lambda: adagrad(0.1, eps=1e-10)),
    ("Adagrad-c0.1", lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-10, initial_accumulator_value=0.1),
     lambda: adagrad(0.1, eps=1e-10, initial_accumulator=0.1)),
    ("Adagrad-make_optimizer", lambda p: torch.optim.Adagrad(p, lr=0.1), lambda: make_optimizer("adagrad", 0.1)),
    ("RMSprop", lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.99), lambda: rmsprop(0.01, rho=0.99, eps=1e-8)),
    ("RMSprop-alpha0.9", lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-6),
     lambda: rmsprop(0.01, rho=0.9, eps=1e-6)),
    ("RMSprop-momentum", lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.99, momentum=0.9),
     lambda: rmsprop(0.01, rho=0.99, momentum=0.9, lr_inside=False)),
    ("RMSprop-momentum-make_optimizer", lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.99, momentum=0.9),
     lambda: make_optimizer("rmsprop+momentum", 0.01, rho=0.99, momentum=0.9, lr_inside=False)),
    ("Adam", lambda p: torch.optim.Adam(p, lr=0.05), lambda: adam(0.05)),
    ("Adam-betas", lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-6),
     lambda: adam(0.05, b1=0.8, b2=0.99, eps=1e-6)),
    ("Adam-weight_decay", lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.01),
     lambda: chain(add_l2(0.01), scale_by_adam(), scale_by_learning_rate(0.05))),
    # torch decays every tensor it is given: descend's mask="all" (its default decays weight tensors only)
    ("AdamW", lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1), lambda: adamw(0.05, weight_decay=0.1,
                                                                                        mask="all")),
    ("AdamW-defaults", lambda p: torch.optim.AdamW(p, lr=0.05), lambda: adamw(0.05, mask="all")),
    ("AdamW-betas", lambda p: torch.optim.AdamW(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.5),
     lambda: adamw(0.02, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.5, mask="all")),
    ("AdamW-torch-convention", lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.2),
     lambda: make_optimizer("adamw", 0.05, **resolve("torch", "adamw", {"weight_decay": 0.2}))),
]


@pytest.mark.parametrize("make_torch, make_descend", [c[1:] for c in PARITY], ids=[c[0] for c in PARITY])
def test_parity_with_torch_optim(make_torch, make_descend):
    run_parity(make_torch, make_descend())


@pytest.mark.parametrize("make_torch, make_descend", [
    (lambda p: torch.optim.Adam(p, lr=0.05), lambda: adam(0.05, bias_correction="folded", eps=1e-3)),
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), lambda: nesterov(0.1, 0.9, lr_inside=False)),
    (lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.99), lambda: rmsprop(0.01, rho=0.9)),
    (lambda p: torch.optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.1), lambda: adagrad(0.1)),
    (lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1), lambda: adamw(0.05, weight_decay=0.1)),
    (lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
     lambda: chain(add_l2(0.1), scale_by_adam(), scale_by_learning_rate(0.05))),
], ids=["Adam-vs-folded", "momentum-vs-nesterov", "RMSprop-wrong-rho", "Adagrad-wrong-c0", "AdamW-vs-weights-mask",
        "AdamW-vs-l2-adam"])
def test_parity_check_detects_mismatched_options(make_torch, make_descend):
    """The comparison is sharp enough to tell the conventions apart."""
    with pytest.raises(AssertionError):
        run_parity(make_torch, make_descend())


# --- learning-rate schedulers ---------------------------------------------------------------


SPE = 4  # mini-batches per epoch


@pytest.mark.parametrize("case", ["StepLR-SGD-momentum", "ExponentialLR-SGD-momentum", "ExponentialLR-Adam",
                                  "StepLR-RMSprop", "StepLR-Adagrad"])
def test_parity_with_torch_lr_schedulers(case):
    lr0, k, gamma, every = 0.2, 0.3, 0.5, 2
    sched_kind, opt_kind = case.split("-", 1)
    if sched_kind == "StepLR":
        make_scheduler = lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=every, gamma=gamma)  # noqa: E731
        schedule = per_epoch(step_decay(lr0, gamma, every), SPE)
    else:
        make_scheduler = lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=math.exp(-k))  # noqa: E731
        schedule = per_epoch(exponential(lr0, k), SPE)
    if opt_kind == "SGD-momentum":
        make_torch = lambda p: torch.optim.SGD(p, lr=lr0, momentum=0.9)  # noqa: E731
        opt = momentum(schedule, 0.9, lr_inside=False)
    elif opt_kind == "Adam":
        make_torch = lambda p: torch.optim.Adam(p, lr=lr0)  # noqa: E731
        opt = adam(schedule)
    elif opt_kind == "RMSprop":
        make_torch = lambda p: torch.optim.RMSprop(p, lr=lr0 / 10, alpha=0.99, momentum=0.5)  # noqa: E731
        opt = rmsprop(per_epoch(step_decay(lr0 / 10, gamma, every), SPE), rho=0.99, momentum=0.5, lr_inside=False)
    else:
        make_torch = lambda p: torch.optim.Adagrad(p, lr=lr0)  # noqa: E731
        opt = adagrad(schedule)
    run_parity(make_torch, opt, epochs=8, steps_per_epoch=SPE, make_scheduler=make_scheduler)


# --- AdamW under a schedule, cosine, clipping -----------------------------------------------

LR0, WD, WARMUP, TOTAL, LR_MIN = 0.05, 0.3, 5, 25, 0.005


def hf_warmup_cosine_factor(step):
    """The multiplier of the widely used warmup + cosine LambdaLR (as in Hugging Face's
    ``get_cosine_schedule_with_warmup``, with a floor): written independently of descend."""
    if step < WARMUP:
        return step / WARMUP
    progress = (step - WARMUP) / (TOTAL - WARMUP)
    return (LR_MIN + (LR0 - LR_MIN) * 0.5 * (1.0 + math.cos(math.pi * progress))) / LR0


def test_adamw_parity_under_a_warmup_cosine_schedule():
    """The decoupled decay uses the scheduled rate: torch's AdamW with a LambdaLR, stepped every step."""
    run_parity(lambda p: torch.optim.AdamW(p, lr=LR0, weight_decay=WD),
               adamw(warmup_cosine(LR0, WARMUP, TOTAL, LR_MIN), weight_decay=WD, mask="all"),
               epochs=TOTAL, make_scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, hf_warmup_cosine_factor),
               rtol=1e-10)


def test_adamw_decay_with_the_unscheduled_rate_is_not_torch():
    """The parity above is sharp: decaying with lr0 instead of the scheduled rate fails it."""
    schedule = warmup_cosine(LR0, WARMUP, TOTAL, LR_MIN)
    with pytest.raises(AssertionError):
        run_parity(lambda p: torch.optim.AdamW(p, lr=LR0, weight_decay=WD),
                   chain(scale_by_adam(), scale_by_learning_rate(schedule), add_l2(-LR0 * WD)),
                   epochs=TOTAL, make_scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, hf_warmup_cosine_factor))


@pytest.mark.parametrize("lr0, make_torch, make_descend", [
    (LR0, lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=WD), lambda s: adamw(s, weight_decay=WD, mask="all")),
    (0.2, lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9), lambda s: momentum(s, 0.9, lr_inside=False)),
], ids=["AdamW", "SGD-momentum"])
def test_cosine_without_warmup_matches_torch_cosine_annealing(lr0, make_torch, make_descend):
    """descend's cosine (no warmup) against torch's own CosineAnnealingLR(T_max, eta_min), stepped every step."""
    run_parity(lambda p: make_torch(p, lr0), make_descend(warmup_cosine(lr0, 0, TOTAL, LR_MIN)), epochs=TOTAL,
               make_scheduler=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=TOTAL, eta_min=LR_MIN),
               rtol=1e-9)


@pytest.mark.parametrize("clip, make_torch, make_descend", [
    (0.3, lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9), lambda: momentum(0.5, 0.9, lr_inside=False)),
    (0.3, lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1), lambda: adamw(0.05, weight_decay=0.1,
                                                                                    mask="all")),
], ids=["SGD-momentum", "AdamW"])
def test_clip_parity_with_torch_clip_grad_norm(clip, make_torch, make_descend):
    """``clip_by_global_norm(c, eps=1e-6)`` before the rule is ``clip_grad_norm_(params, c)`` before ``step()``."""
    norms = run_parity(make_torch, chain(clip_by_global_norm(clip, eps=1e-6), make_descend()), clip=clip,
                       rtol=1e-10)
    assert min(norms) < clip < max(norms), norms  # steps with and without clipping were both compared


def test_clip_by_global_norm_equals_clip_grad_norm():
    rng = np.random.default_rng(5)
    shapes = {"a.W": (3, 4), "a.b": (4,), "c.W": (2, 2, 1, 3)}
    for scale in (1e-3, 0.1, 1.0, 30.0, 0.0):
        grads = {k: scale * rng.normal(size=s) for k, s in shapes.items()}
        tensors = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes.values()]
        for t, g in zip(tensors, grads.values()):
            t.grad = torch.tensor(g)
        norm = float(torch.nn.utils.clip_grad_norm_(tensors, 0.5))
        for eps, rtol in ((1e-6, 1e-15), (0.0, 1e-5)):  # torch adds 1e-6 to the norm; optax does not
            clipped, _ = clip_by_global_norm(0.5, eps=eps).update(grads, (), None)
            for t, k in zip(tensors, grads):
                np.testing.assert_allclose(clipped[k], t.grad.numpy(), rtol=rtol, atol=0, err_msg=f"{scale} {k}")
        assert norm == pytest.approx(math.sqrt(sum(float(np.sum(g * g)) for g in grads.values())), rel=1e-14)


def test_lr_inside_differs_from_torch_under_a_schedule():
    """With a decaying rate the curriculum's lr-inside momentum is not PyTorch's."""
    schedule = per_epoch(step_decay(0.2, 0.5, 2), SPE)
    with pytest.raises(AssertionError):
        run_parity(lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9), momentum(schedule, 0.9, lr_inside=True),
                   epochs=8, steps_per_epoch=SPE,
                   make_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5))


@pytest.mark.parametrize("kwargs", [
    dict(factor=0.5, patience=2, threshold=1e-4, cooldown=0),
    dict(factor=0.5, patience=0, threshold=0.0, cooldown=2),
    dict(factor=0.3, patience=1, threshold=0.05, cooldown=1),
    dict(factor=0.1, patience=3, threshold=0.0, cooldown=3),
])
def test_reduce_on_plateau_matches_torch(kwargs):
    rng = np.random.default_rng(1)
    # a noisy, mostly flat curve with occasional improvements
    metrics = 1.0 + 0.3 * np.exp(-np.arange(80) / 10) + 0.02 * rng.normal(size=80)
    lr0 = 1.0
    param = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([param], lr=lr0)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, mode="min", threshold_mode="rel", min_lr=1e-6 * lr0,
                                                        **kwargs)
    ctl = ReduceOnPlateau(**kwargs, min_scale=1e-6)
    for i, m in enumerate(metrics):
        tsched.step(float(m))
        scale = ctl.observe(float(m))
        assert lr0 * scale == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12), i
    assert ctl.scale < 1.0  # the sequence did reduce


# --- the same optimizers on torch tensors ------------------------------------------------


def torch_tree(tree, dtype=torch.float64):
    return {k: torch.tensor(v, dtype=dtype) for k, v in tree.items()}


VARIANTS = [(name, lambda name=name: make_optimizer(name, 0.05)) for name in OPTIMIZERS] + [
    ("sgd-exponential", lambda: sgd(exponential(0.1, 0.2))),
    ("sgd-inverse", lambda: sgd(inverse_time(0.1, 0.2))),
    ("momentum-step_decay-outside", lambda: momentum(per_epoch(step_decay(0.1, 0.5, 1), 2), 0.9, lr_inside=False)),
    ("nesterov-exponential-inside", lambda: nesterov(exponential(0.1, 0.3), 0.9)),
    ("adagrad-c0.1-eps_in_sqrt", lambda: adagrad(0.1, initial_accumulator=0.1, eps_in_sqrt=True)),
    ("rmsprop-eps_in_sqrt", lambda: rmsprop(0.01, rho=0.99, eps_in_sqrt=True, initial_scale=1.0)),
    ("adam-folded", lambda: adam(0.05, bias_correction="folded")),
    ("adam-none", lambda: adam(0.05, bias_correction="none")),
    ("adam-eps_in_sqrt", lambda: adam(0.05, eps_in_sqrt=True)),
    ("l2+adam", lambda: chain(add_l2(0.01), scale_by_adam(), scale_by_learning_rate(0.05))),
    ("adamw-all-cosine-clip", lambda: make_optimizer("adamw", warmup_cosine(0.1, 3, 10, 0.01), clip_norm=0.5,
                                                     weight_decay=0.2, mask="all")),
    ("nesterov-clip", lambda: make_optimizer("nesterov", 0.1, clip_norm=0.2)),
]


@pytest.mark.parametrize("make", [m for _, m in VARIANTS], ids=[n for n, _ in VARIANTS])
def test_same_optimizer_on_torch_tensors(make):
    x, y, params = problem(2)
    opt = make()
    np_params, t_params = dict(params), torch_tree(params)
    np_state, t_state = opt.init(np_params), opt.init(t_params)
    for _ in range(10):
        grads = softmax_grads(np_params, x, y)
        t_grads = torch_tree(softmax_grads({k: v.numpy() for k, v in t_params.items()}, x, y))
        u, np_state = opt.update(grads, np_state, np_params)
        np_params = apply_updates(np_params, u)
        tu, t_state = opt.update(t_grads, t_state, t_params)
        t_params = apply_updates(t_params, tu)
        for k in params:
            assert isinstance(t_params[k], torch.Tensor) and t_params[k].dtype == torch.float64
            np.testing.assert_allclose(t_params[k].numpy(), np_params[k], rtol=1e-12, atol=1e-14)
    # every leaf of the torch state is a torch tensor (nothing silently went through NumPy)
    stack = [t_state]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, tuple):
            stack.extend(node)
        else:
            assert isinstance(node, torch.Tensor), type(node)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_torch_float32_stays_float32(name):
    _, _, params = problem(3)
    p = torch_tree(params, torch.float32)
    opt = make_optimizer(name, exponential(0.05, 0.1))
    state = opt.init(p)
    for _ in range(3):
        u, state = opt.update({k: v * 0.5 + 0.1 for k, v in p.items()}, state, p)
        p = apply_updates(p, u)
    assert all(v.dtype == torch.float32 for v in p.values())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_update_never_mutates_torch_inputs(name):
    _, _, params = problem(4)
    p = torch_tree(params)
    g = {k: v * 0.3 - 0.2 for k, v in p.items()}
    opt = make_optimizer(name, 0.1)
    state = opt.init(p)
    state_before = [t.clone() for t in torch.utils._pytree.tree_leaves(state)]
    p_before = {k: v.clone() for k, v in p.items()}
    g_before = {k: v.clone() for k, v in g.items()}
    for _ in range(2):
        updates, new_state = opt.update(g, state, p)
        apply_updates(p, updates)
    for k in p:
        assert torch.equal(p[k], p_before[k]) and torch.equal(g[k], g_before[k])
    for a, b in zip(torch.utils._pytree.tree_leaves(state), state_before):
        assert torch.equal(a, b)


def test_schedules_on_torch_steps():
    for t in (0, 1, 7, 10, 33):
        tt = torch.tensor(float(t), dtype=torch.float64)
        assert float(step_decay(0.3, 0.5, 10)(tt)) == pytest.approx(0.3 * 0.5 ** (t // 10), rel=1e-14)
        assert float(exponential(0.3, 0.05)(tt)) == pytest.approx(0.3 * math.exp(-0.05 * t), rel=1e-14)
        assert float(inverse_time(0.3, 0.01)(tt)) == pytest.approx(0.3 / (1 + 0.01 * t), rel=1e-14)
        assert float(per_epoch(step_decay(1.0, 0.5, 1), 4)(tt)) == 0.5 ** (t // 4)
        assert isinstance(exponential(0.3, 0.05)(tt), torch.Tensor)
        cosine = warmup_cosine(0.3, 5, 20, 0.01)(tt)
        assert isinstance(cosine, torch.Tensor) and cosine.dtype == torch.float64
        want = 0.3 * t / 5 if t < 5 else 0.01 + 0.29 * 0.5 * (1 + math.cos(math.pi * min(t - 5, 15) / 15))
        assert float(cosine) == pytest.approx(want, rel=1e-14)


# --- the torch ops namespace mirrors the NumPy one -------------------------------------------


def test_namespace_dispatch():
    assert namespace_of(torch.zeros(2)).name == "torch"
    assert namespace_of(torch.nn.Parameter(torch.zeros(2))).name == "torch"
    assert namespace_of(1.0, np.float64(2.0), torch.zeros(1)).name == "torch"
    assert namespace_of(np.zeros(2)).name == "numpy"
    assert get_ops("torch").name == "torch"


NP, TO = get_ops("numpy"), get_ops("torch")
X = np.array([[1.5, -2.0, 0.0, 3.25], [0.5, 4.0, -1.0, -0.75], [-30.0, 30.0, 2.5, -2.5]])


@pytest.mark.parametrize("fn", ["exp", "cos", "tanh", "abs", "sign", "floor", "square", "sigmoid", "relu", "zeros_like",
                                "ones_like"])
def test_torch_ops_unary(fn):
    want = getattr(NP, fn)(X)
    got = getattr(TO, fn)(torch.tensor(X))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(TO.to_numpy(got), want, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("fn", ["log", "log1p", "sqrt"])
def test_torch_ops_unary_positive(fn):
    x = np.abs(X) + 0.5
    np.testing.assert_allclose(TO.to_numpy(getattr(TO, fn)(torch.tensor(x))), getattr(NP, fn)(x), rtol=1e-14)


@pytest.mark.parametrize("fn", ["sum", "mean", "max"])
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_torch_ops_reductions(fn, axis, keepdims):
    want = getattr(NP, fn)(X, axis=axis, keepdims=keepdims)
    got = TO.to_numpy(getattr(TO, fn)(torch.tensor(X), axis=axis, keepdims=keepdims))
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_torch_ops_binary_and_misc():
    t = torch.tensor(X)
    w = np.arange(8.0).reshape(4, 2) / 7
    np.testing.assert_allclose(TO.to_numpy(TO.matmul(t, torch.tensor(w))), NP.matmul(X, w), rtol=1e-14)
    np.testing.assert_array_equal(TO.to_numpy(TO.maximum(t, 0)), NP.maximum(X, 0))
    np.testing.assert_array_equal(TO.to_numpy(TO.minimum(t, 1.0)), NP.minimum(X, 1.0))
    np.testing.assert_array_equal(TO.to_numpy(TO.maximum(t, t * 0.5)), NP.maximum(X, X * 0.5))
    assert TO.maximum(t.float(), 0).dtype == torch.float32  # a scalar does not upcast
    np.testing.assert_array_equal(TO.to_numpy(TO.where(t > 0, t, 0.0)), NP.where(X > 0, X, 0.0))
    np.testing.assert_array_equal(TO.to_numpy(TO.where(t > 0, t, -t)), NP.where(X > 0, X, -X))
    labels = np.array([3, 0, 1])
    np.testing.assert_array_equal(TO.to_numpy(TO.take_labels(t, labels)), NP.take_labels(X, labels))
    np.testing.assert_array_equal(TO.to_numpy(TO.take_labels(t, torch.tensor(labels))), NP.take_labels(X, labels))
    assert float(TO.sqrt(4.0)) == 2.0
    assert TO.sigmoid(torch.tensor([-1000.0, 1000.0])).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("dtype, want", [
    ("float32", torch.float32), ("float64", torch.float64), ("int32", torch.int32), ("int64", torch.int64),
    (torch.float32, torch.float32), (np.float32, torch.float32), (np.dtype("float64"), torch.float64),
    (np.int32, torch.int32), (float, torch.float64), ("bool", torch.bool),
])
def test_torch_ops_dtypes(dtype, want):
    assert TO.cast(torch.tensor(X), dtype).dtype == want
    assert TO.cast(X, dtype).dtype == want
    assert TO.zeros((2, 3), dtype=dtype).dtype == want
    assert TO.full((), 1, dtype=dtype).dtype == want
    assert TO.asarray([1, 0], dtype=dtype).dtype == want
    assert TO.zeros_like(torch.tensor(X), dtype=dtype).dtype == want


def test_torch_ops_constructors_and_conversion():
    assert TO.zeros((2, 3)).dtype == torch.float32 and tuple(TO.zeros((2, 3)).shape) == (2, 3)
    assert TO.zeros(()).shape == torch.Size([]) and NP.zeros(()).shape == ()
    assert float(TO.full((), 2.5, dtype=torch.float64)) == 2.5
    assert TO.asarray(X).dtype == torch.float64  # NumPy dtype kept
    a = TO.to_numpy(TO.asarray(X))
    assert isinstance(a, np.ndarray) and a.dtype == np.float64
    np.testing.assert_array_equal(a, X)
    req = torch.tensor(X, requires_grad=True)
    np.testing.assert_array_equal(TO.to_numpy(req * 1.0), X)  # detached
    assert TO.to_numpy(3.0) == np.asarray(3.0)
    assert TO.mean(torch.tensor([1, 2])).dtype == torch.float64  # as NumPy: the mean of ints is float64
    assert TO.sum(torch.tensor(2.0)).item() == 2.0  # 0-d input


def test_torch_ops_has_every_numpy_op():
    public = {n for n in dir(NP) if not n.startswith("_") and callable(getattr(NP, n)) and n not in ("annotations",)}
    public -= {"np"}
    missing = {n for n in public if not hasattr(TO, n)}
    assert not missing
