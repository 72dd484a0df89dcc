#!/usr/bin/env python3
"""`kustomize build` for the subset of kustomize that deploy/kubernetes uses, so that the rendered objects
can be validated where no kustomize or kubectl can be installed (scripts/check-deploy.sh).

Supported: `namespace`, `resources` (files), `secretGenerator` / `configMapGenerator` (`envs`,
`literals`, `files`, `type`, `generatorOptions.disableNameSuffixHash`), `images` and `labels` (metadata
labels, `includeSelectors` / `includeTemplates` false). A generated object's name gets kustomize's
content-hash suffix, and references to it from pod templates are rewritten, as kustomize does. Any other
field of the kustomization is an error here, not silently ignored: extend this script, or the check would
validate something else than what `kubectl apply -k` applies.

    render_kustomization.py DIR [--example-env] > rendered.yaml

`--example-env`: every env file of a generator is read from `<file>.example` instead (secrets.env is
git-ignored: the operator writes it), so checks render the Secret from the template's placeholders and
never copy an operator's real secrets anywhere.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import sys

import yaml

SUPPORTED = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "secretGenerator",
    "configMapGenerator",
    "generatorOptions",
    "images",
    "labels",
}
GENERATOR_FIELDS = {"name", "type", "envs", "literals", "files", "options"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class RenderError(Exception):
    pass


def read_env_file(path, example_env):
    """kustomize's env-file rules: `KEY=value` a line, `#` comments and blank lines skipped, the value
    taken as it is (quotes included); a bare `KEY` takes the variable from the environment."""
    if example_env:
        path += ".example"
    if not os.path.exists(path):
        raise RenderError(f"{path}: no such env file (kubectl apply -k would stop here too)")
    pairs = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\n").lstrip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not ENV_NAME.match(key):
                raise RenderError(f"{path}:{number}: {key!r} is not a valid key")
            if not sep:
                value = os.environ.get(key, "")
            if key in pairs:
                raise RenderError(f"{path}:{number}: {key} given twice")
            pairs[key] = value
    return pairs


def hash_suffix(obj):
    """kustomize's name suffix: sha256 of the object's JSON encoding (kind, name, type, data), the first
    ten hex digits with 0, 1, 3, a, e changed to g, h, k, m, t (no vowels, no look-alikes)."""
    if obj["kind"] == "Secret":
        encoded = {"kind": "Secret", "type": obj.get("type", ""), "name": obj["metadata"]["name"]}
        encoded["data"] = obj.get("data", {})
    else:
        encoded = {"kind": "ConfigMap", "name": obj["metadata"]["name"], "data": obj.get("data", {})}
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def generate(kind, spec, base, options, example_env):
    unknown = set(spec) - GENERATOR_FIELDS
    if unknown:
        raise RenderError(f"{kind} generator {spec.get('name')}: unsupported fields {sorted(unknown)}")
    pairs = {}

    def add(key, value):
        if key in pairs:
            raise RenderError(f"{kind} {spec['name']}: key {key} given twice")
        pairs[key] = value

    for env in spec.get("envs", []):
        for key, value in read_env_file(os.path.join(base, env), example_env).items():
            add(key, value)
    for literal in spec.get("literals", []):
        key, sep, value = literal.partition("=")
        if not sep:
            raise RenderError(f"{kind} {spec['name']}: literal {literal!r} has no '='")
        add(key, value)
    for source in spec.get("files", []):
        key, sep, path = source.partition("=")
        if not sep:
            key, path = os.path.basename(source), source
        with open(os.path.join(base, path), encoding="utf-8") as handle:
            add(key, handle.read())
    obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
    if kind == "Secret":
        obj["type"] = spec.get("type", "Opaque")
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in sorted(pairs.items())}
    else:
        obj["data"] = dict(sorted(pairs.items()))
    merged = dict(options or {})
    merged.update(spec.get("options") or {})
    if not merged.get("disableNameSuffixHash"):
        obj["metadata"]["name"] = f"{spec['name']}-{hash_suffix(obj)}"
    return obj


def pod_specs(obj):
    """The pod specs of a workload object (none for other kinds)."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return [spec]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [spec.get("template", {}).get("spec", {})]
    if kind == "CronJob":
        return [spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})]
    return []


def containers(pod):
    return (pod.get("initContainers") or []) + (pod.get("containers") or [])


def rename_references(pod, renamed):
    """Rewrites references to generated ConfigMaps and Secrets, as kustomize's name-reference transformer
    does for pod specs."""

    def fix(holder, field, kind):
        if holder and holder.get(field) in renamed.get(kind, {}):
            holder[field] = renamed[kind][holder[field]]

    for container in containers(pod):
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            fix(source.get("secretKeyRef"), "name", "Secret")
            fix(source.get("configMapKeyRef"), "name", "ConfigMap")
        for env_from in container.get("envFrom") or []:
            fix(env_from.get("secretRef"), "name", "Secret")
            fix(env_from.get("configMapRef"), "name", "ConfigMap")
    for volume in pod.get("volumes") or []:
        fix(volume.get("secret"), "secretName", "Secret")
        fix(volume.get("configMap"), "name", "ConfigMap")
        for source in (volume.get("projected") or {}).get("sources") or []:
            fix(source.get("secret"), "name", "Secret")
            fix(source.get("configMap"), "name", "ConfigMap")
    for pull in pod.get("imagePullSecrets") or []:
        fix(pull, "name", "Secret")


def set_image(container, images):
    image = container.get("image", "")
    name = re.split(r"[@]", image)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    for entry in images:
        if entry["name"] != name:
            continue
        new = entry.get("newName", name)
        if "digest" in entry:
            container["image"] = f"{new}@{entry['digest']}"
        elif "newTag" in entry:
            container["image"] = f"{new}:{entry['newTag']}"
        else:
            container["image"] = new + image[len(name):]


def render(directory, example_env=False):
    with open(os.path.join(directory, "kustomization.yaml"), encoding="utf-8") as handle:
        kustomization = yaml.safe_load(handle)
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise RenderError(f"kustomization fields this renderer does not support: {sorted(unknown)}")
    objects = []
    for resource in kustomization.get("resources", []):
        path = os.path.join(directory, resource)
        if not os.path.isfile(path):
            raise RenderError(f"resource {resource}: not a file (directories and URLs are not supported)")
        with open(path, encoding="utf-8") as handle:
            objects.extend(doc for doc in yaml.safe_load_all(handle) if doc)
    renamed = {}
    options = kustomization.get("generatorOptions")
    for field, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
        for spec in kustomization.get(field) or []:
            obj = generate(kind, spec, directory, options, example_env)
            renamed.setdefault(kind, {})[spec["name"]] = obj["metadata"]["name"]
            objects.append(obj)
    namespace = kustomization.get("namespace")
    images = kustomization.get("images") or []
    for obj in objects:
        metadata = obj.setdefault("metadata", {})
        if namespace and obj.get("kind") not in CLUSTER_SCOPED:
            metadata["namespace"] = namespace
        for label in kustomization.get("labels") or []:
            if label.get("includeSelectors") or label.get("includeTemplates"):
                raise RenderError("labels with includeSelectors/includeTemplates are not supported")
            metadata.setdefault("labels", {}).update(label.get("pairs") or {})
        for pod in pod_specs(obj):
            rename_references(pod, renamed)
            for container in containers(pod):
                set_image(container, images)
    return objects


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--example-env", action="store_true")
    args = parser.parse_args()
    try:
        objects = render(args.directory, args.example_env)
    except (RenderError, OSError, yaml.YAMLError) as error:
        print(f"render_kustomization: {error}", file=sys.stderr)
        return 1
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False, default_flow_style=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
