#!/usr/bin/env python3
"""Validates FHIR R4 (4.0.1) resources with an implementation independent of eligd.

Why: eligd renders its CoverageEligibilityResponse and OperationOutcome by hand (serde
structs), so a test that only reads them back with the same structs proves nothing about
R4. This script checks them against the `fhir.resources` models (6.4.0, the last release
whose default package is R4 4.0.1; later releases default to R4B or R5), which enforce
cardinalities, required elements, primitive formats and unknown elements.

The models leave a few R4 rules unchecked, so `r4_rules` adds them from the specification
(never from eligd's code): FHIR JSON forbids null, empty arrays, objects and strings; the
required value-set bindings of the codes eligd writes; a dateTime with a time carries a
time-zone offset.

Input on stdin: one JSON resource per line, or a single JSON array of resources.
Exit 0 when every resource is valid; on the first invalid one, print which one and why to
stderr and exit 1. Exit 2 when the input itself is unusable.
"""

import json
import re
import sys

import fhir.resources
from fhir.resources import get_fhir_model_class

EXPECTED_FHIR_VERSION = "4.0.1"


# Required bindings (R4 4.0.1) of the coded elements in the resources eligd answers with.
REQUIRED_BINDINGS = {
    "CoverageEligibilityResponse": {
        ("status",): {"active", "cancelled", "draft", "entered-in-error"},
        ("purpose",): {"auth-requirements", "benefits", "discovery", "validation"},
        ("outcome",): {"queued", "complete", "error", "partial"},
    },
    "OperationOutcome": {
        ("issue", "severity"): {"fatal", "error", "warning", "information"},
        ("issue", "code"): {
            "invalid", "structure", "required", "value", "invariant", "security", "login",
            "unknown", "expired", "forbidden", "suppressed", "processing", "not-supported",
            "duplicate", "multiple-matches", "not-found", "deleted", "too-long",
            "code-invalid", "extension", "too-costly", "business-rule", "conflict",
            "transient", "lock-error", "no-store", "exception", "timeout", "incomplete",
            "throttled", "informational",
        },
    },
}
# dateTime elements that must carry an offset whenever they carry a time.
DATE_TIMES = {"CoverageEligibilityResponse": ["created"]}
DATE_TIME_WITH_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def values_at(node, path):
    if not path:
        yield from node if isinstance(node, list) else [node]
        return
    for item in node if isinstance(node, list) else [node]:
        if isinstance(item, dict) and path[0] in item:
            yield from values_at(item[path[0]], path[1:])


def empty_values(node, where="$"):
    if node is None:
        yield f"{where} is null"
    elif isinstance(node, (list, dict, str)) and not (node.strip() if isinstance(node, str) else node):
        yield f"{where} is empty"
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from empty_values(item, f"{where}[{i}]")
    elif isinstance(node, dict):
        for key, item in node.items():
            yield from empty_values(item, f"{where}.{key}")


def r4_rules(resource):
    """The R4 rules fhir.resources 6.4.0 does not enforce; a list of violations."""
    kind = resource.get("resourceType")
    problems = list(empty_values(resource))
    for path, codes in REQUIRED_BINDINGS.get(kind, {}).items():
        for value in values_at(resource, path):
            if value not in codes:
                problems.append(f"{'.'.join(path)} = {value!r} is not in its required value set")
    for name in DATE_TIMES.get(kind, []):
        value = resource.get(name)
        if isinstance(value, str) and "T" in value and not DATE_TIME_WITH_TIME.match(value):
            problems.append(f"{name} = {value!r}: a dateTime with a time needs a time zone")
    return problems


def resources_from(text):
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith("["):
        return json.loads(stripped)
    return [json.loads(line) for line in stripped.splitlines() if line.strip()]


def main():
    if fhir.resources.__fhir_version__ != EXPECTED_FHIR_VERSION:
        print(
            f"fhir.resources {fhir.resources.__version__} models FHIR "
            f"{fhir.resources.__fhir_version__}, not {EXPECTED_FHIR_VERSION}",
            file=sys.stderr,
        )
        return 2
    try:
        resources = resources_from(sys.stdin.read())
    except json.JSONDecodeError as e:
        print(f"input is not JSON lines or a JSON array: {e}", file=sys.stderr)
        return 2
    if not resources:
        print("no resources on stdin", file=sys.stderr)
        return 2
    for number, resource in enumerate(resources, start=1):
        if not isinstance(resource, dict) or "resourceType" not in resource:
            print(f"resource {number}: not a JSON object with resourceType", file=sys.stderr)
            return 1
        kind = resource["resourceType"]
        try:
            model = get_fhir_model_class(kind)
        except KeyError:
            print(f"resource {number}: unknown resourceType {kind!r}", file=sys.stderr)
            return 1
        try:
            model.parse_obj(resource)
        except Exception as e:  # pydantic.ValidationError and friends
            print(f"resource {number} ({kind}) is not valid FHIR R4:\n{e}", file=sys.stderr)
            print(json.dumps(resource, ensure_ascii=False), file=sys.stderr)
            return 1
        problems = r4_rules(resource)
        if problems:
            print(f"resource {number} ({kind}) is not valid FHIR R4:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            print(json.dumps(resource, ensure_ascii=False), file=sys.stderr)
            return 1
    print(f"{len(resources)} resources valid FHIR R4 ({EXPECTED_FHIR_VERSION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
