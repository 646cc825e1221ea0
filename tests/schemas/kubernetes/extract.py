"""Turn CustomResourceDefinitions into the strict JSON Schemas the Kubernetes manifest tests
validate against (how the files beside this one were made: SOURCES.md).

    python tests/schemas/kubernetes/extract.py OUT_DIR CRD.yaml... [--kind KIND]...

For every served version of every CRD (only the listed kinds, if any are listed), writes
`OUT_DIR/<group>/<version>/<Kind>.json`: the version's `openAPIV3Schema`, with what the API
server would reject but JSON Schema would not made explicit, and what cannot be checked here
left out:

- an object that lists `properties` takes no others (`additionalProperties: false`), unless
  it says `x-kubernetes-preserve-unknown-fields`: the API server drops unknown fields, and
  strict validation (`kubectl apply --validate=strict`) refuses them;
- `nullable: true` admits null;
- `apiVersion`, `kind` and `metadata` are allowed at the top, where some CRDs leave them
  out (the API server always has them; metadata is checked as an ObjectMeta by the tests);
- descriptions, defaults and the `x-kubernetes-*` markers are dropped, and so are the CEL
  rules (`x-kubernetes-validations`), which only the API server evaluates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

_DROPPED = {"description", "default", "example"}


def strict_schema(node: Any) -> Any:
    """`node` (an OpenAPI v3 schema from a CRD) as a strict JSON Schema (draft 4)."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = strict_schema(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [strict_schema(sub) for sub in value]
        else:
            out[key] = value
    if node.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def extract(crd: dict[str, Any], out_dir: Path, kinds: set[str]) -> list[Path]:
    """Write the schemas of `crd`'s served versions; the paths written."""
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    if kinds and kind not in kinds:
        return []
    written = []
    for version in crd["spec"]["versions"]:
        if not version.get("served", False):
            continue
        schema = strict_schema(version["schema"]["openAPIV3Schema"])
        for field, type_ in (("apiVersion", "string"), ("kind", "string"), ("metadata", "object")):
            schema.setdefault("properties", {}).setdefault(field, {"type": type_})
        schema["$schema"] = "http://json-schema.org/draft-04/schema#"
        path = out_dir / group / version["name"] / f"{kind}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("crds", type=Path, nargs="+")
    parser.add_argument("--kind", action="append", default=[])
    args = parser.parse_args()
    for path in args.crds:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                for written in extract(document, args.out_dir, set(args.kind)):
                    print(written)


if __name__ == "__main__":
    main()
