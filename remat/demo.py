"""The main job: compile a real model under a budget and measure what it saves.

    python -m remat.demo                       # HF GPT-2 on CPU, budget 0.6 of the keep-all peak
    python -m remat.demo --budget 300MiB --device cuda --layers 12
    python -m remat.demo --model llama         # any type of remat.hf; "builtin": remat's own GPT

The model is Hugging Face transformers' code (random weights from a config, nothing downloaded)
returning its own loss. Runs the same training step eagerly and through remat, checks the
gradients agree, and prints both measured peaks (remat.measure_peak) and step times.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time

import torch

import remat
from remat.budget import format_bytes, parse_budget
from remat.examples import GPT, GPTConfig


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m remat.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--budget", default="0.6", help="bytes, '300MiB', or a fraction (0, 1]")
    parser.add_argument(
        "--model", default="gpt2", help="a transformers model type (gpt2, llama, ...) or builtin"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--solver", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def _budget(text: str) -> int | float | str:
    try:
        return float(text) if "." in text and text.replace(".", "", 1).isdigit() else int(text)
    except ValueError:
        return text


def _build(args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, torch.Tensor], str]:
    """(model, its keyword inputs with labels, a title) for --model."""
    if args.model == "builtin":
        config = GPTConfig(
            vocab_size=args.vocab,
            block_size=args.seq,
            n_layer=args.layers,
            n_head=args.heads,
            n_embd=args.width,
            dropout=0.1,
        )
        idx = torch.randint(0, args.vocab, (args.batch, args.seq))
        return _LossOutput(GPT(config)), {"idx": idx, "targets": torch.roll(idx, -1, 1)}, "GPT"
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise SystemExit(
            "the demo's model comes from Hugging Face transformers: pip install -e '.[hf]' "
            "(or run python -m remat.demo --model builtin)"
        ) from None
    from remat.hf import hf_inputs, hf_model

    model = hf_model(args.model, **_hf_size(args))
    return model, hf_inputs(model, args.batch, args.seq), f"transformers {type(model).__name__}"


def _hf_size(args: argparse.Namespace) -> dict[str, int]:
    """The demo's size flags in the config names of the common decoder families."""
    if args.model == "gpt2":
        return {
            "n_layer": args.layers,
            "n_embd": args.width,
            "n_head": args.heads,
            "vocab_size": args.vocab,
            "n_positions": args.seq,
        }
    return {
        "num_hidden_layers": args.layers,
        "hidden_size": args.width,
        "num_attention_heads": args.heads,
        "intermediate_size": 4 * args.width,
        "vocab_size": args.vocab,
        "max_position_embeddings": args.seq,
    }


@dataclasses.dataclass
class _Output:
    loss: torch.Tensor


class _LossOutput(torch.nn.Module):
    """remat's own GPT called like a transformers model: keyword inputs, `.loss` on the output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> _Output:
        _, loss = self.model(idx, targets)
        return _Output(loss)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    budget = _budget(args.budget)
    parse_budget(budget)  # fail fast, before building anything
    device = torch.device(args.device)
    torch.manual_seed(0)
    eager, inputs, title = _build(args)
    eager = eager.to(device)
    inputs = {name: value.to(device) for name, value in inputs.items()}
    model = copy.deepcopy(eager)
    params = sum(p.numel() for p in eager.parameters())
    print(
        f"{title}: {args.layers} layers x {args.width} wide, {params / 1e6:.1f}M parameters; "
        f"batch {args.batch} x {args.seq} tokens on {device}"
    )

    def step_of(net):
        def step():
            net(**inputs).loss.backward()

        return step

    started = time.perf_counter()
    compiled = remat.compile(model, budget=budget, solver=args.solver)
    torch.manual_seed(1)
    step_of(compiled)()  # the first call captures, plans and rewrites
    plan_s = time.perf_counter() - started
    torch.manual_seed(1)
    step_of(eager)()
    worst = max(
        ((p.grad - q.grad).abs().max() / q.grad.abs().max().clamp_min(1e-12)).item()
        for p, q in zip(model.parameters(), eager.parameters())
    )
    print(compiled.remat_plan)
    print(
        f"compile + plan + first step: {plan_s:.1f}s; "
        f"gradients vs eager: max rel. error {worst:.1e}"
    )

    rows = []
    for name, net, owner in (("eager", eager, eager), ("remat", compiled, model)):

        def reset(owner=owner):
            owner.zero_grad(set_to_none=True)

        peak = remat.measure_peak(step_of(net), device, warmup=1, setup=reset).peak_bytes
        timing = remat.time_step(step_of(net), device, warmup=1, repeats=args.repeats, setup=reset)
        rows.append((name, peak, timing.median_s))
    print(f"\n{'':8}{'measured peak':>18}{'step time':>12}")
    for name, peak, seconds in rows:
        print(f"{name:8}{format_bytes(peak):>18}{seconds * 1e3:>10.0f}ms")
    (_, eager_peak, eager_s), (_, remat_peak, remat_s) = rows
    budget_bytes = compiled.remat_plan.step_budget_bytes
    print(
        f"\nremat saved {format_bytes(eager_peak - remat_peak)} "
        f"({1 - remat_peak / eager_peak:.0%} of the eager peak) at {remat_s / eager_s:.2f}x the "
        f"step time; budget {format_bytes(budget_bytes)}: "
        f"{'honoured' if remat_peak <= budget_bytes else 'EXCEEDED'}"
    )
    return 0 if remat_peak <= budget_bytes and worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
