#!/usr/bin/env python3
"""Offline checks of the Azure templates (run by tests/tests/azure_templates.rs).

1. main.bicep parses with tree-sitter-bicep (no Bicep compiler can be
   installed where CI runs: the Bicep CLI ships from GitHub releases and
   through the Azure CLI, and CI reaches only crates.io, PyPI and Debian).
2. azuredeploy.json validates against Azure's ARM template JSON Schemas
   (tests/schemas/arm, draft-04, resolved locally: nothing is downloaded):
   the template's top level against deploymentTemplate.json, then every
   resource against resourceBase + the definition of its (type, apiVersion).
3. The two forms agree: the same parameters, the same resources (type,
   apiVersion, looped or not), and the ARM JSON's cloud-init is
   cloud-init.yaml byte for byte.
4. The validator can fail: known-bad variants of the template are refused.

Prints one line per problem and exits 1 if there is any.
"""

import copy
import json
import pathlib
import re
import sys

import referencing
import referencing.exceptions
import tree_sitter
import tree_sitter_bicep
from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCHEMAS = ROOT / "tests" / "schemas" / "arm"
PREFIX = "https://schema.management.azure.com/"
TEMPLATE_SCHEMA = PREFIX + "schemas/2019-04-01/deploymentTemplate.json#"
RESOURCE_BASE = PREFIX + "schemas/2019-04-01/deploymentTemplate.json#/definitions/resourceBase"


def registry():
    def refuse(uri):
        raise referencing.exceptions.NoSuchResource(ref=uri)

    resources = []
    for path in (SCHEMAS / "schemas").rglob("*.json"):
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
        url = PREFIX + str(path.relative_to(SCHEMAS)).replace("\\", "/")
        resources.append((url, referencing.Resource.from_contents(doc)))
    return referencing.Registry(retrieve=refuse).with_resources(resources)


def definitions_index():
    """(type lower-case, apiVersion) -> '<file url>#/resourceDefinitions/<name>'."""
    index = {}
    for path in (SCHEMAS / "schemas").rglob("*.json"):
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
        url = PREFIX + str(path.relative_to(SCHEMAS)).replace("\\", "/")
        for section in ("resourceDefinitions", "extension_resourceDefinitions"):
            for name, definition in doc.get(section, {}).items():
                props = definition.get("properties", {})
                types = props.get("type", {}).get("enum", [])
                versions = props.get("apiVersion", {}).get("enum", [])
                if types and versions:
                    index[(types[0].lower(), versions[0])] = f"{url}#/{section}/{name}"
    return index


def validate_template(template, reg, index):
    """Problems of an ARM template, as 'where: what' lines."""
    problems = []
    top = copy.deepcopy(template)
    top["resources"] = []
    for error in Draft4Validator({"$ref": TEMPLATE_SCHEMA}, registry=reg).iter_errors(top):
        problems.append(f"template/{'/'.join(map(str, error.absolute_path))}: {error.message}")
    for i, resource in enumerate(template.get("resources", [])):
        key = (str(resource.get("type", "")).lower(), resource.get("apiVersion"))
        ref = index.get(key)
        if ref is None:
            problems.append(f"resources/{i}: no schema shipped for {resource.get('type')}@{resource.get('apiVersion')}")
            continue
        schema = {"allOf": [{"$ref": RESOURCE_BASE}, {"$ref": ref}]}
        error = best_match(Draft4Validator(schema, registry=reg).iter_errors(resource))
        if error is not None:
            where = "/".join(map(str, error.absolute_path))
            problems.append(f"resources/{i} ({resource.get('type')})/{where}: {error.message}"[:400])
    return problems


def bicep_problems(path):
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))
    tree = parser.parse(path.read_bytes())
    problems = []

    def walk(node):
        if node.type == "ERROR" or node.is_missing:
            row, col = node.start_point
            problems.append(f"{path.name}:{row + 1}:{col + 1}: syntax error near {node.text[:60]!r}")
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    return tree, problems


def bicep_declarations(tree):
    """Parameters and (type, apiVersion, looped) of resources declared in Bicep."""
    params, resources = set(), []
    for node in tree.root_node.children:
        if node.type == "parameter_declaration":
            params.add(node.child_by_field_name("name").text.decode() if node.child_by_field_name("name") else node.children[1].text.decode())
        elif node.type == "resource_declaration":
            strings = [c for c in node.children if c.type == "string"]
            type_version = strings[0].text.decode().strip("'")
            rtype, version = type_version.split("@")
            looped = any(c.type == "for_statement" for c in node.children)
            resources.append((rtype.lower(), version, looped))
    return params, sorted(resources)


def main():
    problems = []
    tree, syntax = bicep_problems(HERE / "main.bicep")
    problems += syntax
    template = json.loads((HERE / "azuredeploy.json").read_text())
    reg, index = registry(), definitions_index()
    problems += validate_template(template, reg, index)

    params, bicep_resources = bicep_declarations(tree)
    if params != set(template["parameters"]):
        problems.append(f"parameters differ: bicep {sorted(params)} vs json {sorted(template['parameters'])}")
    json_resources = sorted(
        (r["type"].lower(), r["apiVersion"], "copy" in r) for r in template["resources"]
    )
    if bicep_resources != json_resources:
        problems.append(f"resources differ:\n  bicep {bicep_resources}\n  json  {json_resources}")
    if template["variables"].get("cloudInit") != (HERE / "cloud-init.yaml").read_text():
        problems.append("azuredeploy.json's variables.cloudInit is not cloud-init.yaml")
    placeholders = set(re.findall(r"__[A-Z_]+__", (HERE / "cloud-init.yaml").read_text())) - {"__PLACEHOLDERS__"}
    customs = [r for r in template["resources"] if r["type"] == "Microsoft.Compute/virtualMachines"]
    custom = customs[0]["properties"]["osProfile"]["customData"] if customs else ""
    for p in sorted(placeholders):
        if f"'{p}'" not in custom:
            problems.append(f"cloud-init placeholder {p} is not replaced in azuredeploy.json")
        if f"'{p}'" not in (HERE / "main.bicep").read_text():
            problems.append(f"cloud-init placeholder {p} is not replaced in main.bicep")

    # The validator must be able to fail.
    def vm(t):
        return next(r for r in t["resources"] if r["type"] == "Microsoft.Compute/virtualMachines")

    def cosmos(t):
        return next(r for r in t["resources"] if r["type"] == "Microsoft.DocumentDB/databaseAccounts")

    mutations = {
        "evictionPolicy Dealocate": lambda t: vm(t)["properties"].__setitem__("evictionPolicy", "Dealocate"),
        "priority spot": lambda t: vm(t)["properties"].__setitem__("priority", "spot"),
        "maxPrice as a string": lambda t: vm(t)["properties"]["billingProfile"].__setitem__("maxPrice", "-1"),
        "enableFreeTier as a string": lambda t: cosmos(t)["properties"].__setitem__("enableFreeTier", "true"),
        "unknown apiVersion": lambda t: vm(t).__setitem__("apiVersion", "2099-01-01"),
        "top-level typo": lambda t: t.__setitem__("parameter", {}),
    }
    for name, mutate in mutations.items():
        bad = copy.deepcopy(template)
        mutate(bad)
        if not validate_template(bad, reg, index):
            problems.append(f"the validator accepted a template with {name}")

    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"ok: main.bicep parses; azuredeploy.json ({len(template['resources'])} resources) validates; the two agree; {len(mutations)} bad variants refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
