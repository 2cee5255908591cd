"""What `remat analyze` runs: a model from MODULE:FACTORY and its inputs from small specs.

    load_factory("mypkg.models:build")           # or "path/to/file.py:build"
    parse_input_spec("randn(8,3,224,224)")        # also rand, zeros, ones, randint(high,(shape))
    parse_input_spec("randint(512,(8,128))")      # randint(low, high, (shape)) works too

A factory returns a module (its inputs then come from the specs, one per positional argument)
or a `(module, example_args)` tuple. `hf:TYPE` names a Hugging Face model type instead
(`build_hf_target`: default config plus overrides, random init, a batch with labels from
`remat.hf`). Every problem raises TargetError with a message that says what to fix; the caller
decides how to show it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from remat.torch_internals import tree_map

_EXAMPLES = "randn(8,3,224,224), randint(1000,(8,128)) or rand(4,16,dtype=float16)"
_FLOAT_MAKERS = {"randn": torch.randn, "rand": torch.rand, "zeros": torch.zeros, "ones": torch.ones}
DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "double": torch.float64,
    "int64": torch.int64,
    "long": torch.int64,
    "int32": torch.int32,
    "int": torch.int32,
    "bool": torch.bool,
}


class TargetError(ValueError):
    """The model or its inputs cannot be built; the message says what to fix."""


@dataclass(frozen=True)
class InputSpec:
    """One positional argument: a tensor recipe, or a plain Python constant."""

    text: str
    maker: str
    """'randn', 'rand', 'zeros', 'ones', 'randint' or 'const'."""
    shape: tuple[int, ...] = ()
    dtype: torch.dtype | None = None
    low: int = 0
    high: int = 0
    value: object = None

    def build(self, device: torch.device, default_float: torch.dtype | None = None) -> Any:
        if self.maker == "const":
            return self.value
        if self.maker == "randint":
            dtype = self.dtype or torch.int64
            return torch.randint(self.low, self.high, self.shape, dtype=dtype, device=device)
        dtype = self.dtype or default_float or torch.get_default_dtype()
        return _FLOAT_MAKERS[self.maker](self.shape, dtype=dtype, device=device)


@dataclass(frozen=True)
class Target:
    """The model to analyze and the arguments of one training step's forward call."""

    model: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def parse_input_spec(text: str) -> InputSpec:
    """'randn(8,3,224,224)' -> InputSpec; raise TargetError naming the problem."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise TargetError(f"cannot read input spec {text!r}; write e.g. {_EXAMPLES}") from None
    if isinstance(tree, ast.Constant) and isinstance(tree.value, (int, float, bool)):
        return InputSpec(text, "const", value=tree.value)
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)):
        raise TargetError(f"cannot read input spec {text!r}; write e.g. {_EXAMPLES}")
    maker = tree.func.id
    if maker not in (*_FLOAT_MAKERS, "randint"):
        known = ", ".join([*_FLOAT_MAKERS, "randint"])
        raise TargetError(f"unknown input maker {maker!r} in {text!r}; use one of {known}")
    args = [_literal(node, text) for node in tree.args]
    keywords = {kw.arg: kw.value for kw in tree.keywords}
    unknown = set(keywords) - {"dtype"}
    if unknown:
        raise TargetError(
            f"unknown keyword {sorted(map(str, unknown))[0]!r} in {text!r}; only dtype= is accepted"
        )
    dtype = _dtype(keywords["dtype"], text) if "dtype" in keywords else None
    if maker == "randint":
        return _randint(text, args, dtype)
    return InputSpec(text, maker, _shape(args, text), dtype)


def _randint(text: str, args: list[object], dtype: torch.dtype | None) -> InputSpec:
    if len(args) == 2:
        low, high, shape = 0, args[0], args[1]
    elif len(args) == 3:
        low, high, shape = args
    else:
        raise TargetError(f"randint takes (high, (shape)) or (low, high, (shape)), got {text!r}")
    if not (isinstance(low, int) and isinstance(high, int) and low < high):
        raise TargetError(f"randint needs integers low < high in {text!r}")
    return InputSpec(text, "randint", _shape([shape], text), dtype, low=low, high=high)


def _literal(node: ast.AST, text: str) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise TargetError(
            f"only numbers and tuples of numbers may appear in {text!r} "
            f"(found {ast.unparse(node)!r})"
        ) from None


def _shape(args: list[object], text: str) -> tuple[int, ...]:
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = list(args[0])
    if not args or not all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in args):
        raise TargetError(f"the shape in {text!r} must be non-negative integers, e.g. {_EXAMPLES}")
    return tuple(args)  # type: ignore[arg-type]


def _dtype(node: ast.AST, text: str) -> torch.dtype:
    name = ast.unparse(node).strip("'\"").removeprefix("torch.")
    if name not in DTYPES:
        raise TargetError(f"unknown dtype {name!r} in {text!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def load_factory(spec: str) -> Callable[[], Any]:
    """'pkg.module:build' or 'path/file.py:build' -> the callable (dotted attributes allowed)."""
    module_name, colon, attribute = spec.rpartition(":")
    if not colon or not module_name or not attribute:
        raise TargetError(f"expected MODULE:FACTORY, e.g. mypkg.models:build, got {spec!r}")
    module = _import(module_name)
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"{module_name!r} has no attribute {attribute!r}; check FACTORY")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TargetError(f"{spec} is a {type(obj).__name__}, not a callable returning a model")
    return obj


def _import(name: str) -> Any:
    if name.endswith(".py") or os.sep in name or "/" in name:
        if not os.path.isfile(name):
            raise TargetError(f"no such file {name!r}; give MODULE as a dotted name or a .py path")
        module_spec = importlib.util.spec_from_file_location(_file_module_name(name), name)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        _run_user_code(lambda: module_spec.loader.exec_module(module), f"importing {name}")
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: modules next to the user
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and name.startswith(error.name):
            raise TargetError(
                f"cannot import {name!r}: no module named {error.name!r}; "
                "check MODULE and that it is on PYTHONPATH"
            ) from error
        raise TargetError(f"importing {name!r} failed: {_one_line(error)}") from error
    except Exception as error:
        raise TargetError(f"importing {name!r} failed: {_one_line(error)}") from error


def _file_module_name(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"_remat_target_{stem}"


def _run_user_code(call: Callable[[], Any], what: str) -> Any:
    try:
        return call()
    except Exception as error:
        raise TargetError(f"{what} failed: {_one_line(error)}") from error


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def build_target(
    factory_spec: str,
    inputs: Sequence[str] = (),
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> Target:
    """Call the factory, build the inputs, and move both to `device` (and `dtype`)."""
    specs = [parse_input_spec(text) for text in inputs]  # fail on a typo before building
    device = torch.device(device)
    factory = load_factory(factory_spec)
    made = _run_user_code(factory, f"calling {factory_spec}()")
    model, args, kwargs = _unpack(made, factory_spec)
    if specs:
        args, kwargs = tuple(spec.build(device, dtype) for spec in specs), {}
    elif not args and not kwargs:
        raise TargetError(
            f"{factory_spec} returned a module without example inputs; pass one --input per "
            f"positional argument of its forward, e.g. --input 'randn(8,3,224,224)'"
        )
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
    args, kwargs = _to_device((args, kwargs), device, dtype)
    described = ", ".join(inputs) if inputs else "the factory's example inputs"
    return Target(model, tuple(args), dict(kwargs), f"{factory_spec}({described})")


def _unpack(made: object, spec: str) -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
    if isinstance(made, nn.Module):
        return made, (), {}
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], nn.Module):
        model, example = made
        if isinstance(example, dict):
            return model, (), dict(example)
        if isinstance(example, (tuple, list)):
            return model, tuple(example), {}
        return model, (example,), {}
    raise TargetError(
        f"{spec} returned {type(made).__name__}; return an nn.Module or a (module, example_args) "
        "tuple"
    )


def _to_device(tree: Any, device: torch.device, dtype: torch.dtype | None) -> Any:
    def move(value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        if dtype is not None and value.is_floating_point():
            return value.to(device=device, dtype=dtype)
        return value.to(device=device)

    return tree_map(move, tree)


HF_PREFIX = "hf:"
_HF_KEY = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)")


def is_hf_spec(spec: str) -> bool:
    return spec.startswith(HF_PREFIX)


def parse_hf_config(text: str) -> dict[str, Any]:
    """'n_layer=4,n_embd=256,depths=[2,2]' -> {'n_layer': 4, 'n_embd': 256, 'depths': [2, 2]}.

    Values are Python literals (numbers, True/False/None, lists); anything else is a string."""
    config: dict[str, Any] = {}
    for item in (part.strip() for part in _HF_KEY.split(text) if part.strip()):
        key, equals, value = (piece.strip() for piece in item.partition("="))
        if not equals or not key.isidentifier():
            raise TargetError(
                f"cannot read {item!r} in --hf-config; write key=value,... e.g. n_layer=4"
            )
        try:
            config[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            config[key] = value
    return config


def build_hf_target(
    spec: str,
    *,
    batch: int,
    seq: int,
    config: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> Target:
    """`hf:TYPE`: the type's default config plus `config`, random init, in training mode, with
    a batch of `batch` (x `seq` tokens; ignored by vision models) from `remat.hf.hf_inputs`."""
    from remat import hf

    model_type = spec.removeprefix(HF_PREFIX)
    if model_type not in hf.FAMILIES:
        raise TargetError(
            f"unknown Hugging Face model type {model_type!r} in {spec!r}; known: "
            f"{', '.join(sorted(hf.FAMILIES))}"
        )
    if batch < 1 or seq < 1:
        raise TargetError(f"--batch and --seq must be >= 1, got {batch} and {seq}")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise TargetError(
            f"{spec} needs Hugging Face transformers: pip install transformers"
        ) from None
    config = dict(config or {})
    defaults = _run_user_code(lambda: hf.hf_config(model_type), f"building the {model_type} config")
    unknown = sorted(key for key in config if not hasattr(defaults, key))
    if unknown:
        raise TargetError(
            f"the {model_type} config has no field {unknown[0]!r} (--hf-config); see "
            f"transformers' {type(defaults).__name__} for its fields"
        )
    model = _run_user_code(lambda: hf.hf_model(model_type, **config), f"building {spec}")
    inputs = hf.hf_inputs(model, batch, seq)
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
    kwargs = _to_device(inputs, torch.device(device), dtype)
    shape = " x ".join(str(n) for n in next(iter(inputs.values())).shape)
    settings = ",".join(f"{k}={v}" for k, v in config.items())
    described = f"{spec}({settings}; {', '.join(inputs)} {shape})"
    return Target(model, (), kwargs, described)
