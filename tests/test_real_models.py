"""Hugging Face transformers models under remat, as a user runs them: tiny random-init configs
of fourteen families (decoder, encoder, encoder-decoder and vision), each returning its own
loss in a `ModelOutput` beside logits (and, for decoders, a KV cache).

Each family is held to the contracts on model code remat did not write: eager's outputs and
gradients; at the loosest budget no more than eager's measured peak (+5%); at the measured peak
of per-block checkpointing (HF's `gradient_checkpointing_enable()`) it trains, within budget;
and the simulator's peak within 5% of the measured one.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import remat
from remat.measure import measure_peak

transformers = pytest.importorskip("transformers")

from remat.hf import FAMILIES, hf_inputs, hf_model, with_per_block_checkpointing  # noqa: E402

REL_TOL = 1e-5
SEQ = 128
TIME_LIMIT = 2.0
"""Seconds the solver gets per plan: enough on these graphs, short for the test run."""
FAMILY_NAMES = sorted(FAMILIES)


@pytest.fixture(autouse=True)
def _fresh_dynamo_quiet_transformers():
    # Every HF model's forward goes through one decorator's code object: without a reset the
    # test run's compiles of many models would count against Dynamo's recompile limit.
    torch._dynamo.reset()
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    yield
    transformers.logging.set_verbosity(verbosity)


def _step(model, inputs):
    torch.manual_seed(1)  # the same dropout masks for every run
    out = model(**inputs)
    out.loss.backward()
    return out


def _peak(model, inputs, owner) -> int:
    return measure_peak(
        lambda: _step(model, inputs), "cpu", setup=lambda: owner.zero_grad(set_to_none=True)
    ).peak_bytes


def _assert_close(actual, expected, what: str) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    error = ((actual - expected).abs().max() / scale).item()
    assert error <= REL_TOL, f"{what}: relative error {error:.2e}"


def _assert_same_step(model, reference, out, ref_out) -> None:
    _assert_close(out.loss.detach(), ref_out.loss.detach(), "loss")
    _assert_close(out.logits.detach(), ref_out.logits.detach(), "logits")
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if q.grad is not None:
            _assert_close(p.grad, q.grad, f"grad of {name}")


class Family:
    """One family's reference run: the model, a batch, eager's and checkpointing's peaks."""

    def __init__(self, name: str) -> None:
        torch.manual_seed(0)
        self.name = name
        self.reference = hf_model(name, "tiny")
        self.inputs = hf_inputs(self.reference, batch=2, seq=SEQ)
        self.eager_peak = _peak(self.reference, self.inputs, self.reference)
        checkpointed = with_per_block_checkpointing(copy.deepcopy(self.reference))
        self.checkpoint_peak = _peak(checkpointed, self.inputs, checkpointed)
        self.reference.zero_grad(set_to_none=True)
        self.reference_out = _step(self.reference, self.inputs)
        self.floor: int | None = None

    def check(self, budget: int | float) -> tuple[remat.RematModule, int]:
        """Compile a copy under `budget`, compare one step with eager, measure the peak."""
        model = copy.deepcopy(self.reference)
        model.zero_grad(set_to_none=True)
        compiled = remat.compile(model, budget=budget, time_limit=TIME_LIMIT)
        out = _step(compiled, self.inputs)
        _assert_same_step(model, self.reference, out, self.reference_out)
        measured = _peak(compiled, self.inputs, model)
        predicted = compiled.remat_plan.predicted_peak
        assert abs(predicted - measured) <= 0.05 * measured, (
            f"{self.name}: simulated {predicted} vs measured {measured}"
        )
        assert measured <= compiled.remat_plan.step_budget_bytes, (
            f"{self.name}: measured {measured} > budget {compiled.remat_plan.step_budget_bytes}"
        )
        return compiled, measured


_families: dict[str, Family] = {}


def _family(name: str) -> Family:
    if name not in _families:
        _families[name] = Family(name)
    return _families[name]


DEFAULT_RUN = ("gpt2", "llama", "bert", "t5", "vit", "resnet")
"""Families the default run puts through remat.compile's contracts (decoder, encoder,
encoder-decoder, vision transformer, CNN); the slow tier runs all fourteen (CI time)."""


def _param(name: str, default: tuple[str, ...] = DEFAULT_RUN):
    return pytest.param(name, marks=() if name in default else (pytest.mark.slow,))


@pytest.mark.parametrize("name", [_param(n) for n in FAMILY_NAMES])
def test_loosest_budget_is_no_higher_than_eager(name):
    family = _family(name)
    _, measured = family.check(1.0)
    assert measured <= 1.05 * family.eager_peak, (
        f"{name}: {measured} bytes at budget 1.0, eager {family.eager_peak}"
    )


@pytest.mark.parametrize("name", [_param(n) for n in FAMILY_NAMES])
def test_trains_at_per_block_checkpointings_peak(name):
    family = _family(name)
    compiled, _ = family.check(family.checkpoint_peak)
    (graph_plan,) = compiled.remat_plans[compiled._planner.current_key].graphs
    _assert_no_worse_than_structured(graph_plan.captured.graph, graph_plan.plan)


def _assert_no_worse_than_structured(graph, plan) -> None:
    """The plan costs no more recomputation than any hand-written structure that fits its
    budget (per-block, every k-th block, selective), scored by the same simulator."""
    from remat.simulate import simulate
    from remat.solvers.structured import structured_family

    for (schedule, boundary), label in structured_family(graph):
        candidate = simulate(graph, schedule, boundary)
        if candidate.peak <= plan.budget:
            assert plan.recompute_time <= candidate.recompute_time * (1 + 1e-9), (
                f"{label}: {candidate.recompute_time} s beats the plan's {plan.recompute_time} s"
            )


def _floor(family: Family) -> int:
    """The lowest budget remat.compile names for the family's step (its refusal's floor)."""
    if family.floor is None:
        probe = remat.compile(copy.deepcopy(family.reference), budget=1, time_limit=TIME_LIMIT)
        with pytest.raises(remat.InfeasibleBudgetError) as error:
            _step(probe, family.inputs)
        family.floor = error.value.floor
    return family.floor


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_trains_below_per_block_checkpointings_peak(name):
    """Between the floor and checkpointing's peak: remat goes lower than the manual option."""
    family = _family(name)
    floor = _floor(family)
    assert floor <= family.checkpoint_peak, f"{name}: floor {floor} above checkpointing's peak"
    family.check((floor + family.checkpoint_peak) // 2)


def _backend_check(family: Family, budget: int) -> None:
    """Three steps through `torch.compile(backend="remat")`: the last has eager's loss, logits
    and gradients, and the step's measured peak is within the budget. A step the backend sees
    as several graphs (HF code's graph breaks) is planned whole after its first step, which
    may warn that it ran its graph-by-graph plans above the budget."""
    model = copy.deepcopy(family.reference)
    options = {"budget": budget, "inner": "eager", "time_limit": TIME_LIMIT}
    compiled = torch.compile(model, backend="remat", options=options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(3):
            model.zero_grad(set_to_none=True)
            out = _step(compiled, family.inputs)
    _assert_same_step(model, family.reference, out, family.reference_out)
    measured = _peak(compiled, family.inputs, model)
    report = remat.last_plans()
    assert report.step_budget_bytes == budget
    assert measured <= budget, f"{family.name}: measured {measured} > budget {budget}\n{report}"
    assert report.predicted_peak <= budget


BACKEND_DEFAULT_RUN = ("gpt2", "bert", "t5")
"""Families the default test run puts through the backend (GPT-2's logging breaks the step in
two there); the slow tier runs every family."""


@pytest.mark.parametrize("name", [_param(n, BACKEND_DEFAULT_RUN) for n in FAMILY_NAMES])
def test_backend_trains_at_per_block_checkpointings_peak(name):
    family = _family(name)
    _backend_check(family, family.checkpoint_peak)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_backend_trains_below_per_block_checkpointings_peak(name):
    family = _family(name)
    _backend_check(family, (_floor(family) + family.checkpoint_peak) // 2)


def test_behaves_like_the_model_it_wraps():
    """Attribute access, the forward's signature and generation reach the original model."""
    import inspect

    family = _family("gpt2")
    model = copy.deepcopy(family.reference)
    compiled = remat.compile(model, budget=1.0)
    assert compiled.config is model.config
    assert "input_ids" in inspect.signature(compiled.forward).parameters
    with torch.no_grad():
        tokens = compiled.generate(family.inputs["input_ids"][:, :4], max_new_tokens=2)
    assert tokens.shape == (2, 6)


def test_hf_trainer_trains_the_compiled_model(tmp_path):
    """HF's Trainer takes the compiled model as it takes the original: a few steps, the loss
    goes down, the parameters it updates are the original's."""
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = hf_model("gpt2", "tiny", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    batch = hf_inputs(model, batch=1, seq=32)
    rows = [{"input_ids": batch["input_ids"][0], "labels": batch["labels"][0]}] * 8
    before = model.lm_head.weight.detach().clone()
    compiled = remat.compile(model, budget=0.8)
    arguments = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=4,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
    )
    trainer = Trainer(model=compiled, args=arguments, train_dataset=rows)
    result = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert result.global_step == 4
    assert not torch.equal(model.lm_head.weight, before)
    assert compiled.remat_plan is not None


def test_a_gradient_through_an_output_planned_as_unused_is_reported():
    family = _family("gpt2")
    compiled = remat.compile(copy.deepcopy(family.reference), budget=1.0)
    out = compiled(**family.inputs)
    with pytest.warns(RuntimeWarning, match="loss_reserve"):
        (out.loss + out.logits.mean()).backward()


class _CheckedEncoder(torch.nn.Module):
    """A user's model around HF code: an encoder, a data-dependent sanity check on its output
    (Dynamo breaks the graph there), then a head of its own."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = hf_model("bert", "tiny", hidden_dropout_prob=0.0).bert
        width = self.encoder.config.hidden_size
        self.head = torch.nn.Sequential(
            torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width)
        )

    def forward(self, input_ids):
        hidden = self.encoder(input_ids=input_ids).last_hidden_state
        if bool(torch.isnan(hidden).any()):
            raise FloatingPointError("NaN activations")
        return self.head(hidden).square().mean()


def _peak_of(step, owner) -> int:
    return measure_peak(step, "cpu", setup=lambda: owner.zero_grad(set_to_none=True)).peak_bytes


def test_a_graph_broken_hf_step_is_planned_whole_within_budget():
    ids = hf_inputs(hf_model("bert", "tiny"), batch=4, seq=SEQ)["input_ids"]
    reference = _CheckedEncoder()

    def run(model):
        torch.manual_seed(1)
        model(ids).backward()

    with pytest.raises(remat.InfeasibleBudgetError, match="2 graphs planned together") as e:
        run(remat.compile(_CheckedEncoder(), budget=1, time_limit=TIME_LIMIT))
    budget = int(1.1 * e.value.floor)
    model = _CheckedEncoder()
    compiled = remat.compile(model, budget=budget, time_limit=TIME_LIMIT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the discarded first forward, if any
        run(compiled)
    run(reference)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        _assert_close(p.grad, q.grad, f"grad of {name}")
    (step,) = compiled.remat_plans.values()
    assert len(step.graphs) == 2 and step.runs_joint_plan
    # planned graph by graph, the first call's plans would have broken this budget
    assert step.joint.ran_over_budget
    measured = _peak_of(lambda: run(compiled), model)
    assert measured <= budget, f"measured {measured} > budget {budget}"
    assert abs(step.predicted_peak - measured) <= 0.05 * measured
