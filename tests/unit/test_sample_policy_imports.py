"""The sample library (`policies/`) imports other packages' rules one by one.

regorus evaluates every rule of a package that a module refers to through a package import
(`import data.wimse.routes`, then `routes.applying`), where a rule import
(`import data.wimse.routes.applying`) evaluates that rule alone; measured on the allow path,
the package imports cost about a quarter of the decision. This pins the cheap form; the
decisions themselves are pinned by the Rego tests and `test_compiled_parity.py`'s corpus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from authz.policy.embedded import build_engine
from authz.policy.loader import PolicySet, load_policy_set

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _dotted(ref: Any) -> str:
    kind, node = next(iter(ref.items()))
    if kind == "Var":
        return str(node["value"])
    return f"{_dotted(node['refr'])}.{node['field'][1]}"


def package_imports(policy_set: PolicySet) -> list[str]:
    """`file: import data.x.y` for every serving module that imports a whole package of the
    set."""
    modules = json.loads(build_engine(policy_set).get_ast_as_json())
    packages = {_dotted(module["ast"]["package"]["refr"]) for module in modules}
    packages |= {"data." + package for package in packages if not package.startswith("data.")}
    return [
        f"{module['source']['file']}: import {_dotted(entry['refr'])}"
        for module in modules
        for entry in module["ast"]["imports"]
        if _dotted(entry["refr"]) in packages
    ]


def test_sample_policies_import_rules_not_packages() -> None:
    assert package_imports(load_policy_set(POLICIES)) == []


def test_a_package_import_is_found(tmp_path: Path) -> None:
    (tmp_path / "lib.rego").write_text("package lib\nimport rego.v1\nx := 1\n")
    (tmp_path / "use.rego").write_text(
        "package use\nimport rego.v1\nimport data.lib\nimport data.lib.x\ny := lib.x + x\n"
    )
    assert package_imports(load_policy_set(tmp_path)) == ["use.rego: import data.lib"]
