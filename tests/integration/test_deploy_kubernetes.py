"""deploy/kubernetes: valid manifests, in agreement with each other, and run as written.

Three checks: every manifest validates offline against the Kubernetes
schemas ``kubernetes-validate`` bundles (strict: an unknown field fails);
the manifests agree with each other (ports, the Service's name in
``--join``, mounts, probe commands that busctl parses, grace periods); and
the master's pod and a joined pod run in two network namespaces, with the
commands, ``busd.toml``, probes and preStop hooks taken from the YAML
(paths and addresses substituted, nothing else), the Secrets' files made
from the README's own ``busctl keygen`` and ``kubectl create secret``
lines, laid out as the kubelet lays out a Secret volume.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from busd.client.ctl.parser import build_parser, parse
from busd.testing import Processes
from tests.integration import netns

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
README = KUBE / "README.md"
#: A version whose schemas kubernetes-validate bundles (checked offline, strict).
KUBERNETES_VERSION = "1.34.0"
TIMEOUT = 60.0
#: Where the image has busd and busctl, and where this test has them.
VENV_BIN, BIN = "/venv/bin", str(Path(sys.executable).parent)
Doc = dict[str, Any]
net = netns.net


def manifests() -> list[Path]:
    return sorted(KUBE.glob("*.yaml"))


def documents() -> dict[tuple[str, str], Doc]:
    """Every resource of every manifest, by (kind, name)."""
    found: dict[tuple[str, str], Doc] = {}
    for path in manifests():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in found, f"{path.name}: {key} twice"
                found[key] = doc
    return found


@pytest.fixture(scope="module")
def docs() -> dict[tuple[str, str], Doc]:
    return documents()


def container(doc: Doc) -> Doc:
    """The one container of a Deployment's pod."""
    containers = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def argv(doc: Doc) -> list[str]:
    """The pod's command line (command, then args)."""
    box = container(doc)
    return [*box["command"], *box.get("args", [])]


def option(args: list[str], name: str) -> str:
    """The value after ``name`` in ``args``."""
    assert name in args, f"{name} not in {args}"
    return args[args.index(name) + 1]


def probes(doc: Doc) -> dict[str, list[str]]:
    """readiness, liveness and preStop: each an exec command."""
    box = container(doc)
    return {
        "readiness": box["readinessProbe"]["exec"]["command"],
        "liveness": box["livenessProbe"]["exec"]["command"],
        "preStop": box["lifecycle"]["preStop"]["exec"]["command"],
    }


def busctl_args(command: list[str]) -> Any:
    """A probe's busctl command, parsed as busctl parses it (a bad one exits 2)."""
    assert Path(command[0]).name == "busctl", command
    return parse(build_parser(), command[1:])


def master_config(docs: dict[tuple[str, str], Doc]) -> dict[str, Any]:
    return tomllib.loads(docs["ConfigMap", "busd-config"]["data"]["busd.toml"])


def mounted_at(doc: Doc, path: str) -> tuple[Doc, Doc]:
    """The volume mount holding ``path`` and its volume."""
    pod = doc["spec"]["template"]["spec"]
    for mount in container(doc)["volumeMounts"]:
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            return mount, volume
    pytest.fail(f"{path}: no volume mounted there")


# -- deploy/busd.toml ---------------------------------------------------------------------


def test_deploy_busd_toml_is_the_one_the_guide_shows() -> None:
    text = (ROOT / "deploy" / "busd.toml").read_text()
    guide = (ROOT / "docs" / "GUIDE.md").read_text()
    section = guide[guide.index("## Several pools") :]
    shown = re.search(r"```toml\n(.*?)```", section, re.S)
    assert shown, "the guide's Several pools section shows a toml block"
    assert shown.group(1) == text
    pools = tomllib.loads(text)["pools"]
    assert pools["web"]["target"].startswith("asgi:busd.examples.")
    assert pools["jobs"]["after"] == ["web"]
    (other,) = [p for p in pools.values() if p.get("bus") is False]
    port = re.fullmatch(r"tcp:127\.0\.0\.1:(\d+)", other["ready"])
    assert port, "the program that does not speak the bus is ready by a loopback port"
    assert other["command"][-1] == port.group(1)
    assert "127.0.0.1" in other["command"]


# -- (a) each manifest is valid ----------------------------------------------------------


@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_manifest_validates_strictly_offline(path: Path) -> None:
    import kubernetes_validate

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    for doc in docs:
        # Raises ValidationError naming the field (strict: unknown fields too).
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strict_validation_refuses_an_unknown_field(docs: dict[tuple[str, str], Doc]) -> None:
    import kubernetes_validate

    doc = json.loads(json.dumps(docs["Deployment", "busd-master"]))
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 10
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


# -- (b) the manifests agree with each other ---------------------------------------------


def test_the_service_exposes_the_masters_bind_port_and_the_next(
    docs: dict[tuple[str, str], Doc],
) -> None:
    master = docs["Deployment", "busd-master"]
    service = docs["Service", "busd-master"]
    bind = re.fullmatch(r"tcp://0\.0\.0\.0:(\d+)", option(argv(master), "--bind"))
    assert bind, "the master binds its CURVE endpoint on every address of the pod"
    ctl = int(bind.group(1))
    ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    named = {p["name"]: p["containerPort"] for p in container(master)["ports"]}
    # ctl, and PUB on the next port: both reach the same ports of the container.
    assert sorted(ports) == [ctl, ctl + 1]
    assert [named[ports[ctl]], named[ports[ctl + 1]]] == [ctl, ctl + 1]
    labels = master["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert master["spec"]["replicas"] == 1
    assert master["spec"]["strategy"]["type"] == "Recreate"


def test_the_joined_pods_join_the_service(docs: dict[tuple[str, str], Doc]) -> None:
    joined = argv(docs["Deployment", "busd-joined"])
    service = docs["Service", "busd-master"]
    ctl = min(p["port"] for p in service["spec"]["ports"])
    assert option(joined, "--join") == f"tcp://{service['metadata']['name']}:{ctl}"
    assert "--server-key" in joined
    assert "--curve-secret" in joined
    assert re.fullmatch(r"\d+", option(joined, "-w"))
    labels = docs["Deployment", "busd-joined"]["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= labels.items(), (
        "the master's Service must not select the joined pods"
    )


def test_the_configmap_is_the_masters_busd_toml(docs: dict[tuple[str, str], Doc]) -> None:
    master = docs["Deployment", "busd-master"]
    config = master_config(docs)
    assert set(config) <= {"busd", "pools"}
    pools = config["pools"]
    assert pools["jobs"]["after"] == ["web"]
    assert pools["web"]["target"].startswith("asgi:")
    assert any(p.get("bus") is False and "ready" in p for p in pools.values())
    path = option(argv(master), "--config")
    mount, volume = mounted_at(master, path)
    assert volume["configMap"]["name"] == "busd-config"
    assert path == f"{mount['mountPath']}/busd.toml"
    assert mount["readOnly"] is True


def test_the_keys_come_from_secrets_mounted_read_only_0400(
    docs: dict[tuple[str, str], Doc],
) -> None:
    wanted = {
        "busd-master": ["--curve-secret", "--authorized-keys"],
        "busd-joined": ["--server-key", "--curve-secret"],
    }
    for name, flags in wanted.items():
        doc = docs["Deployment", name]
        box = container(doc)
        assert box["securityContext"]["runAsUser"] == 0, "the kubelet gives Secret files to root"
        assert "fsGroup" not in (doc["spec"]["template"]["spec"].get("securityContext") or {})
        for flag in flags:
            path = option(argv(doc), flag)
            mount, volume = mounted_at(doc, path)
            assert mount["readOnly"] is True
            secret = volume["secret"]
            assert secret["defaultMode"] == 0o400
            rel = path[len(mount["mountPath"]) + 1 :]
            paths = [i["path"] for i in secret.get("items", [])]
            if flag == "--authorized-keys":
                # A subdirectory: the volume's top dir is writable by all.
                assert "/" not in rel
                assert any(p.startswith(rel + "/") and p.endswith(".key") for p in paths)
            elif paths:
                assert rel in paths


def test_the_probes_and_prestop_are_busctl_commands(docs: dict[tuple[str, str], Doc]) -> None:
    for name in ("busd-master", "busd-joined"):
        doc = docs["Deployment", name]
        found = probes(doc)
        readiness = busctl_args(found["readiness"])
        assert readiness.command == "wait"
        assert readiness.state == "STARTED"
        assert busctl_args(found["liveness"]).command == "ping"
        stop = busctl_args(found["preStop"])
        assert (stop.command, stop.wait) == ("exit", True)
        box = container(doc)
        # A probe's own --timeout ends before the kubelet gives up on it.
        assert readiness.timeout < box["readinessProbe"]["timeoutSeconds"]
        assert busctl_args(found["liveness"]).timeout < box["livenessProbe"]["timeoutSeconds"]
        # The kubelet's SIGKILL comes after busd's own graceful timeout and the preStop.
        if name == "busd-master":
            graceful = float(master_config(docs)["busd"]["graceful_timeout"])
        else:
            graceful = float(option(argv(doc), "--graceful-timeout"))
        grace = doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > graceful
        assert grace > stop.timeout
        runtime = next(e["value"] for e in box["env"] if e["name"] == "BUSD_RUNTIME_DIR")
        _, volume = mounted_at(doc, runtime)
        assert "emptyDir" in volume


def test_the_web_service_reaches_both_pools(docs: dict[tuple[str, str], Doc]) -> None:
    web = docs["Service", "web"]
    (port,) = web["spec"]["ports"]
    listens = {
        "busd-master": master_config(docs)["pools"]["web"]["listen"],
        "busd-joined": [option(argv(docs["Deployment", "busd-joined"]), "--listen")],
    }
    for name, listen in listens.items():
        doc = docs["Deployment", name]
        assert (
            web["spec"]["selector"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()
        ), f"{name} is not behind the web Service"
        named = {p["name"]: p["containerPort"] for p in container(doc)["ports"]}
        assert listen == [f"tcp:0.0.0.0:{named[port['targetPort']]}"]


# -- (c) the same commands, run in two network namespaces -------------------------------


def readme_sh() -> list[str]:
    """The README's sh commands, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README shows its key commands in a sh block"
    return [line for b in blocks for line in b.replace("\\\n", " ").splitlines() if line.strip()]


def make_secrets(work: Path) -> dict[str, dict[str, bytes]]:
    """Run the README's keygen lines in ``work``; the Secrets its kubectl lines make."""
    bindir = Path(sys.executable).parent
    secrets: dict[str, dict[str, bytes]] = {}
    for line in readme_sh():
        words = shlex.split(line)
        if words[:2] == ["busctl", "keygen"]:
            subprocess.run([str(bindir / "busctl"), *words[1:]], cwd=work, check=True, timeout=60)
        elif words[:4] == ["kubectl", "create", "secret", "generic"]:
            files = [w.removeprefix("--from-file=") for w in words if w.startswith("--from-file=")]
            secrets[words[4]] = {
                key: (work / path).read_bytes() for key, path in (f.split("=", 1) for f in files)
            }
        else:
            pytest.fail(f"README: a sh line this test does not know: {line}")
    return secrets


def project(directory: Path, files: dict[str, bytes], mode: int) -> None:
    """Lay out ``files`` as the kubelet writes a Secret or ConfigMap volume.

    The top dir is writable by all (tmpfs, sticky); a timestamped dir (0755)
    holds the files (``mode``) and subdirectories (0755: the kubelet's
    umask), ``..data`` points at it, and each top entry is a symlink through
    ``..data``.
    """
    directory.mkdir(parents=True)
    os.chmod(directory, 0o1777)
    stamp = directory / "..2026_01_01_00_00_00.000000001"
    stamp.mkdir()
    os.chmod(stamp, 0o755)
    for rel, content in files.items():
        path = stamp / rel
        for parent in reversed(path.relative_to(stamp).parents[:-1]):
            (stamp / parent).mkdir(mode=0o755, exist_ok=True)
        path.write_bytes(content)
        os.chmod(path, mode)
    (directory / "..data").symlink_to(stamp.name)
    for top in sorted({rel.split("/")[0] for rel in files}):
        (directory / top).symlink_to(f"..data/{top}")


@dataclass
class Pod:
    """One Deployment's pod, run here: its namespace, mounts and environment."""

    doc: Doc
    ns: str
    root: Path
    mounts: dict[str, Path]
    env: dict[str, str]

    def local(self, text: str) -> str:
        """``text`` with each mount path (and the image's /venv/bin) turned into its path here.

        One pass: a path put in is never substituted again (``/tmp`` is a mount too).
        """
        here = {**{k: str(v) for k, v in self.mounts.items()}, VENV_BIN: BIN}
        pattern = "|".join(re.escape(p) for p in sorted(here, key=len, reverse=True))
        return re.sub(rf"(?<![\w.-])({pattern})(?=/|$)", lambda m: here[m.group(1)], text)

    def command(self, words: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *(self.local(w) for w in words)]

    def run(self, words: list[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        """An exec probe or hook of this pod (its namespace, its environment)."""
        return subprocess.run(
            self.command(words),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def make_pod(
    doc: Doc,
    ns: str,
    root: Path,
    secrets: dict[str, dict[str, bytes]],
    maps: dict[str, dict[str, bytes]],
    base_env: dict[str, str],
) -> Pod:
    """The pod's volumes made under ``root`` (Secrets, ConfigMaps, emptyDirs)."""
    spec = doc["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts: dict[str, Path] = {}
    for index, mount in enumerate(container(doc)["volumeMounts"]):
        volume = volumes[mount["name"]]
        here = root / str(index)
        if "secret" in volume or "configMap" in volume:
            source = volume.get("secret") or volume["configMap"]
            data = secrets[source["secretName"]] if "secret" in volume else maps[source["name"]]
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            project(
                here,
                {i["path"]: data[i["key"]] for i in items},
                source.get("defaultMode", 0o644),
            )
        else:
            assert "emptyDir" in volume
            here.mkdir(parents=True)
            os.chmod(here, 0o1777)
        mounts[mount["mountPath"]] = here
    pod = Pod(doc, ns, root, mounts, {})
    pod.env = {**base_env, **{e["name"]: pod.local(e["value"]) for e in container(doc)["env"]}}
    return pod


def wait_ready(pod: Pod, proc: subprocess.Popen[bytes], procs: Processes) -> None:
    """Run the readiness probe as the kubelet does, until it passes (bounded)."""
    deadline = time.monotonic() + TIMEOUT
    probe = probes(pod.doc)["readiness"]
    while True:
        if proc.poll() is not None:
            pytest.fail(f"busd exited ({proc.returncode}): {procs.output(proc)}")
        done = pod.run(probe)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"readiness {probe} never passed: {done.stdout}{done.stderr}\n{procs.output(proc)}"
            )


def leftovers(sid: int, root: Path) -> list[str]:
    """Live processes of session ``sid``, or whose environment names a path under ``root``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if os.getsid(proc.pid) == sid or any(
                str(root) in value for value in proc.environ().values()
            ):
                found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])}")
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


@pytest.fixture
def pods(net: netns.Net, busd_procs: Processes, busd_dir: Path, tmp_path: Path) -> tuple[Pod, Pod]:
    """The master's pod in one namespace, a joined pod in the other (not started)."""
    docs = documents()
    keys = tmp_path / "keys"
    keys.mkdir()
    secrets = make_secrets(keys)
    maps = {
        name: {k: v.encode() for k, v in doc["data"].items()}
        for (kind, name), doc in docs.items()
        if kind == "ConfigMap"
    }
    env = {**busd_procs.env}
    for name in ("BUSD_RUNTIME_DIR", "BUSD_NAME"):
        env.pop(name, None)
    master = make_pod(
        docs["Deployment", "busd-master"], net.master_ns, busd_dir / "m", secrets, maps, env
    )
    joined = make_pod(
        docs["Deployment", "busd-joined"], net.host_ns, busd_dir / "j", secrets, maps, env
    )
    # The Service's name resolves to the master pod's address.
    service = docs["Service", "busd-master"]["metadata"]["name"]
    joined_args = argv(joined.doc)
    joined_args[joined_args.index("--join") + 1] = option(joined_args, "--join").replace(
        f"//{service}:", f"//{net.master_addr}:"
    )
    joined.doc = json.loads(json.dumps(joined.doc))
    box = joined.doc["spec"]["template"]["spec"]["containers"][0]
    box["command"], box["args"] = joined_args[:1], joined_args[1:]
    return master, joined


@pytest.mark.slow
def test_the_pods_run_as_written_in_two_namespaces(
    pods: tuple[Pod, Pod], busd_procs: Processes, net: netns.Net
) -> None:
    master, joined = pods
    master_proc = busd_procs.spawn(master.command(argv(master.doc)), name="master", env=master.env)
    wait_ready(master, master_proc, busd_procs)
    events = netns.Events(Path(master.env["BUSD_RUNTIME_DIR"]))
    try:
        joined_proc = busd_procs.spawn(
            joined.command(argv(joined.doc)), name="joined", env=joined.env
        )
        wait_ready(joined, joined_proc, busd_procs)
        for pod in (master, joined):
            alive = pod.run(probes(pod.doc)["liveness"])
            assert alive.returncode == 0, alive.stdout + alive.stderr
        local = int(option(argv(joined.doc), "-w"))
        events.wait(
            "host_updated",
            lambda host: (
                len(host["workers"]) == local
                and all(w["state"] == "STARTED" for w in host["workers"])
            ),
        )
        done = master.run(["/venv/bin/busctl", "--json", "status"])
        assert done.returncode == 0, done.stdout + done.stderr
        status = json.loads(done.stdout)
        tables = master_config(documents())["pools"]
        assert {p["name"] for p in status["pools"]} == set(tables), status
        by_pool: dict[str, list[str]] = {}
        for worker in status["workers"]:
            by_pool.setdefault(worker["pool"], []).append(worker["state"])
        for name, table in tables.items():
            assert by_pool.get(name) == ["STARTED"] * table.get("workers", 1), status
        (host,) = status["hosts"]
        assert [w["state"] for w in host["workers"]] == ["STARTED"] * local
    finally:
        events.close()

    # The joined pod goes first: its pool alone ends, the master goes on.
    for pod, proc in ((joined, joined_proc), (master, master_proc)):
        hook = pod.run(probes(pod.doc)["preStop"])
        assert hook.returncode == 0, hook.stdout + hook.stderr + busd_procs.output(proc)
        assert proc.wait(TIMEOUT) == 0, busd_procs.output(proc)
        assert leftovers(proc.pid, pod.root) == []
        if pod is joined:
            alive = master.run(probes(master.doc)["liveness"])
            assert alive.returncode == 0, "the master ended with a joined pod"
