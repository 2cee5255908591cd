"""A graph-broken step on transformers code, planned whole: `python -m benchmarks.graph_break_hf`.

An HF BERT encoder (4 x 128, random init), a data-dependent NaN check on its output (Dynamo
breaks the graph there) and an MLP head, batch 4 x 256 tokens, CPU. For budgets of 0.6, 0.4
and 0.3 of eager's measured peak: graphs, whether the joint plan runs, whether the greedy
plans would have broken the budget, measured and predicted peaks, gradient error vs eager.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import remat
from remat.hf import hf_model
from remat.measure import measure_peak


class CheckedEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = hf_model(
            "bert", num_hidden_layers=4, hidden_size=128, num_attention_heads=4,
            intermediate_size=512, vocab_size=2048,
        ).bert  # fmt: skip
        self.head = nn.Sequential(
            *[nn.Sequential(nn.Linear(128, 512), nn.GELU(), nn.Linear(512, 128)) for _ in range(4)]
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids).last_hidden_state
        if bool(torch.isnan(hidden).any()):  # data-dependent: Dynamo breaks the graph here
            raise FloatingPointError("NaN activations")
        return self.head(hidden).square().mean()


def main() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    reference = CheckedEncoder().train()
    ids = torch.randint(0, 2048, (4, 256))

    def step(model: nn.Module) -> None:
        torch.manual_seed(1)
        model(ids).backward()

    def peak(model: nn.Module, owner: nn.Module) -> int:
        setup = lambda: owner.zero_grad(set_to_none=True)  # noqa: E731
        return measure_peak(lambda: step(model), "cpu", setup=setup).peak_bytes

    mib = 2**20
    eager = peak(reference, reference)
    reference.zero_grad(set_to_none=True)
    step(reference)
    print(f"eager {eager / mib:.1f} MiB")
    for fraction in (0.6, 0.4, 0.3):
        torch._dynamo.reset()
        model = copy.deepcopy(reference)
        model.zero_grad(set_to_none=True)
        compiled = remat.compile(model, budget=int(fraction * eager))
        step(compiled)
        error = max(
            ((p.grad - q.grad).abs().max() / q.grad.abs().max().clamp_min(1e-12)).item()
            for p, q in zip(model.parameters(), reference.parameters())
            if q.grad is not None
        )
        measured = peak(compiled, model)
        (plans,) = compiled.remat_plans.values()
        greedy_over = plans.joint.ran_over_budget if plans.joint else None
        print(
            f"{fraction}: budget {fraction * eager / mib:.1f} MiB, {len(plans.graphs)} graphs, "
            f"joint plan runs {plans.runs_joint_plan}, greedy plans over budget {greedy_over}, "
            f"measured {measured / mib:.1f} MiB, predicted {plans.predicted_peak / mib:.1f} MiB, "
            f"max grad rel. error {error:.1e}"
        )


if __name__ == "__main__":
    main()
