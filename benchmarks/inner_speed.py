"""remat.compile's inner compilers on CPU: `python -m benchmarks.inner_speed`.

remat's GPT (4 layers x 256, vocab 2048, batch 8 x 256 tokens, an outside square().mean()
loss): eager's peak and median step time, then remat at budgets 1.0 and 0.6 of the keep-all
peak with inner="eager" (fx code) and inner="inductor": measured peak, budget, step time
relative to eager, first call (compile + plan) time.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

import remat
from remat.examples import GPT, GPTConfig
from remat.measure import measure_peak, time_step


def main() -> None:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=2048, block_size=256, n_layer=4, n_head=4, n_embd=256)
    reference = GPT(config)
    tokens = torch.randint(0, config.vocab_size, (8, 256))

    def step(model: nn.Module) -> None:
        model(tokens).float().square().mean().backward()

    def measure(model: nn.Module, owner: nn.Module) -> tuple[int, float]:
        setup = lambda: owner.zero_grad(set_to_none=True)  # noqa: E731
        peak = measure_peak(lambda: step(model), "cpu", setup=setup).peak_bytes
        timing = time_step(lambda: step(model), "cpu", warmup=2, repeats=7, setup=setup)
        return peak, timing.median_s

    mib = 2**20
    eager_peak, eager_s = measure(reference, reference)
    print(f"eager: peak {eager_peak / mib:.1f} MiB, step {eager_s * 1e3:.0f} ms")
    for fraction in (1.0, 0.6):
        for inner in ("eager", "inductor"):
            torch._dynamo.reset()
            model = copy.deepcopy(reference)
            compiled = remat.compile(model, budget=fraction, inner=inner)
            started = time.perf_counter()
            step(compiled)
            first_s = time.perf_counter() - started
            peak, step_s = measure(compiled, model)
            budget = compiled.remat_plan.step_budget_bytes
            print(
                f"budget {fraction} {inner:8s}: peak {peak / mib:.1f} MiB (budget "
                f"{budget / mib:.1f}), step {step_s / eager_s:.2f}x eager, "
                f"first call {first_s:.0f} s"
            )


if __name__ == "__main__":
    main()
