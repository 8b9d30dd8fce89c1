"""A deterministic CycloneDX 1.5 JSON document.

Lists are sorted (components by bom-ref, properties by name and value), keys
sorted, no wall-clock time: metadata.timestamp is SOURCE_DATE_EPOCH (left out
when it is not set), and the serial number is a UUID v5 of the SHA-256 of the
document without it: the same inputs give the same bytes.
"""
import datetime
import hashlib
import json
import os
import uuid

SPEC = "1.5"
SCHEMA = "http://cyclonedx.org/schema/bom-1.5.schema.json"


def sha256(hexdigest):
    return [{"alg": "SHA-256", "content": hexdigest}]


def properties(pairs):
    return [{"name": n, "value": v} for n, v in sorted(set(pairs))]


def timestamp():
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return None
    t = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _sorted_component(c):
    c = dict(c)
    if "properties" in c:
        c["properties"] = sorted(c["properties"], key=lambda p: (p["name"], p["value"]))
    if "components" in c:
        c["components"] = sorted((_sorted_component(x) for x in c["components"]), key=lambda x: x["bom-ref"])
    return c


def document(subject, components, dependencies, tools):
    """subject: metadata.component; dependencies: {bom-ref: [bom-ref]};
    tools: metadata.tools components."""
    meta = {"component": _sorted_component(subject), "tools": {"components": tools}}
    ts = timestamp()
    if ts:
        meta["timestamp"] = ts
    return {
        "$schema": SCHEMA,
        "bomFormat": "CycloneDX",
        "specVersion": SPEC,
        "version": 1,
        "metadata": meta,
        "components": sorted((_sorted_component(c) for c in components), key=lambda c: c["bom-ref"]),
        "dependencies": [{"ref": r, "dependsOn": sorted(set(d))} for r, d in sorted(dependencies.items())],
    }


def _text(doc):
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def dumps(doc):
    """The document as JSON text, with its content-derived serial number."""
    body = {k: v for k, v in doc.items() if k != "serialNumber"}
    digest = hashlib.sha256(_text(body).encode()).hexdigest()
    body["serialNumber"] = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'airlock-sbom:sha256:' + digest)}"
    return _text(body)
