"""Reading the deploy files for test_deploy.py: the Kubernetes manifests as one cluster (every
document of every file), the config file inside its ConfigMap, and systemd unit files."""

import os
import posixpath

import yaml

# The kinds the manifests may hold, with the apiVersion each must use.
API_VERSIONS = {
    "Namespace": "v1",
    "ConfigMap": "v1",
    "Service": "v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
}
CONFIG_MAP = "gswarm-config"
CONFIG_FILE = "gswarm.conf"


def flatten(tree, prefix=""):
    """{"host": {"port": 1}} -> {"host.port": 1}; lists and scalars are leaves."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def env_value(container, name):
    """The literal value of variable `name` in `container` (an AssertionError when missing)."""
    for entry in container.get("env", []):
        if entry["name"] == name and "value" in entry:
            return entry["value"]
    raise AssertionError(f"container {container['name']} sets no {name}")


def _inside(path, directory):
    path, directory = posixpath.normpath(path), posixpath.normpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


class Cluster:
    """Every document of every *.yaml file in a kustomization directory."""

    def __init__(self, docs, kustomization):
        self.docs = docs                    # [("file.yaml#n", document)]
        self.kustomization = kustomization
        config_map = self.named("ConfigMap", CONFIG_MAP)
        self.config_text = config_map["data"][CONFIG_FILE]
        self.config = yaml.safe_load(self.config_text)

    @classmethod
    def load(cls, directory):
        docs, kustomization = [], None
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".yaml"):
                continue
            with open(os.path.join(directory, name)) as f:
                loaded = [d for d in yaml.safe_load_all(f) if d is not None]
            if name == "kustomization.yaml":
                kustomization = loaded[0]
                continue
            docs += [(f"{name}#{i}", doc) for i, doc in enumerate(loaded)]
        if kustomization is None:
            raise AssertionError(f"no kustomization.yaml in {directory}")
        return cls(docs, kustomization)

    def all(self, kind):
        return [doc for _, doc in self.docs if doc.get("kind") == kind]

    def one(self, kind):
        found = self.all(kind)
        if len(found) != 1:
            raise AssertionError(f"expected one {kind}, found {len(found)}")
        return found[0]

    def named(self, kind, name):
        for doc in self.all(kind):
            if doc["metadata"]["name"] == name:
                return doc
        raise AssertionError(f"no {kind} named {name}")

    def containers(self):
        """(workload name, container) for every container of every workload."""
        for kind in ("StatefulSet", "DaemonSet"):
            for workload in self.all(kind):
                pod = workload["spec"]["template"]["spec"]
                for container in pod.get("initContainers", []) + pod["containers"]:
                    yield workload["metadata"]["name"], container

    @staticmethod
    def mount_holding(container, path):
        """The volume mount `path` lies in (the deepest one), or None."""
        mounts = [m for m in container.get("volumeMounts", []) if _inside(path, m["mountPath"])]
        return max(mounts, key=lambda m: len(m["mountPath"]), default=None)

    @staticmethod
    def volume(pod, name):
        for volume in pod["spec"].get("volumes", []):
            if volume["name"] == name:
                return volume
        raise AssertionError(f"no volume {name}")

    @staticmethod
    def container_port(container, port):
        """A port number, or a named port resolved against the container's ports."""
        if isinstance(port, int):
            return port
        for entry in container.get("ports", []):
            if entry.get("name") == port:
                return entry["containerPort"]
        raise AssertionError(f"container {container['name']} has no port named {port}")

    @staticmethod
    def secret_ref(container, name):
        for entry in container.get("env", []):
            if entry["name"] == name:
                ref = entry["valueFrom"]["secretKeyRef"]
                return ref["name"], ref["key"]
        raise AssertionError(f"container {container['name']} sets no {name}")

    def assert_config_mounted(self, test, pod):
        """GSWARM_CONFIG names the ConfigMap's file where the pod mounts it."""
        for container in pod["spec"]["containers"]:
            path = env_value(container, "GSWARM_CONFIG")
            mount = self.mount_holding(container, path)
            test.assertIsNotNone(mount, f"{path} is not mounted")
            volume = self.volume(pod, mount["name"])
            test.assertEqual(volume.get("configMap", {}).get("name"), CONFIG_MAP)
            relative = posixpath.relpath(path, mount["mountPath"])
            items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
            test.assertEqual(items.get(relative, relative), CONFIG_FILE)
            test.assertTrue(mount.get("readOnly"), "the config is read-only")


def parse_unit(text):
    """A systemd unit file as [(section, key, value)]: comments and blank lines dropped,
    backslash continuations joined, repeated keys kept in order."""
    entries, section, pending = [], None, ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep or section is None:
            raise AssertionError(f"not a unit file line: {raw!r}")
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_values(entries, section):
    """{key: [values in order]} of one section."""
    out = {}
    for sec, key, value in entries:
        if sec == section:
            out.setdefault(key, []).append(value)
    return out
