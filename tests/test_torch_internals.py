"""remat.torch_internals: torch's private APIs in one place, and the version remat is tested on."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
import torch
from torch._functorch.aot_autograd import aot_module_simplified
from torch._functorch.partitioners import default_partition

import remat
import remat.torch_internals as internals
from remat.torch_internals import TESTED_TORCH, check_torch_version, is_primal, is_tangent

ROOT = Path(remat.__file__).resolve().parent
LAYER = {"torch_internals.py", "inductor.py"}
"""The modules allowed to name torch internals: the layer, and Inductor's adapter."""


def _private_uses(path: Path) -> list[str]:
    """Names of private torch modules `path` imports or reaches by attribute, aliases resolved
    (`import torch.fx as fx; fx.graph._X` is `torch.fx.graph._X`)."""
    tree = ast.parse(path.read_text(), str(path))
    aliases: dict[str, str] = {}
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imported.append(alias.name)
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            imported.append(node.module)
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    reached = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            root, _, rest = ast.unparse(node).partition(".")
            if root in aliases:
                reached.append(f"{aliases[root]}.{rest}")
    return [
        name
        for name in imported + reached
        if name.startswith("torch.")
        and not name.startswith("torch.ops.")  # ATen op names (`aten._softmax`) are public
        and any(part.startswith("_") for part in name.split(".")[1:])
    ]


def test_private_torch_apis_are_named_only_in_the_layer():
    offenders = {
        str(path.relative_to(ROOT)): sorted(set(uses))
        for path in sorted(ROOT.rglob("*.py"))
        if path.name not in LAYER and (uses := _private_uses(path))
    }
    assert not offenders, f"private torch APIs outside the layer: {offenders}"


def test_the_scan_sees_imports_and_attributes(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import torch\nfrom torch._guards import x\nfrom torch import nn\n"
        "y = torch._dynamo.reset\nz = torch.utils._pytree.tree_map\nw = torch.nn.Linear\n"
        "v = torch.ops.aten._softmax.default\nimport torch.fx as fx\nu = fx.graph._BoxedCodeGen\n"
    )
    uses = set(_private_uses(source))
    assert {"torch._guards", "torch._dynamo.reset", "torch.utils._pytree"} <= uses
    assert "torch.fx.graph._BoxedCodeGen" in uses
    assert not any("nn" in use or "softmax" in use for use in uses)


def test_another_torch_version_is_named_once(monkeypatch):
    monkeypatch.setattr(internals, "_warned", [])
    assert check_torch_version(TESTED_TORCH + "+cpu")
    with pytest.warns(RuntimeWarning, match=f"tested with torch {TESTED_TORCH}; this is torch 9.9"):
        assert not check_torch_version("9.9.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_torch_version("9.9.0")  # said once per version


def test_the_tested_version_is_the_pinned_one():
    pyproject = (ROOT.parent / "pyproject.toml").read_text()
    assert f'"torch=={TESTED_TORCH}"' in pyproject


def test_graph_input_roles_come_from_aot_descriptors():
    roles = {}

    def partition(joint, inputs, **kwargs):
        for node in joint.graph.find_nodes(op="placeholder"):
            roles[node.name] = (is_primal(node), is_tangent(node))
            node.name = f"input_{len(roles)}"  # roles do not depend on AOTAutograd's names
            assert (is_primal(node), is_tangent(node)) == list(roles.values())[-1]
        return default_partition(joint, inputs, **kwargs)

    def backend(gm, example_inputs):
        return aot_module_simplified(gm, example_inputs, fw_compiler=_boxed, partition_fn=partition)

    torch._dynamo.reset()
    model = torch.nn.Linear(4, 3)
    torch.compile(model, backend=backend)(torch.randn(2, 4)).sum().backward()
    primals = [name for name, (p, t) in roles.items() if p and not t]
    tangents = [name for name, (p, t) in roles.items() if t and not p]
    assert len(primals) == 3 and len(tangents) == 1  # weight, bias, input; the output's grad


def _boxed(gm, example_inputs):
    from torch._functorch.aot_autograd import make_boxed_func

    return make_boxed_func(gm.forward)
