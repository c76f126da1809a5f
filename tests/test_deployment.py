"""Deployment files are correct by construction: Dockerfile, compose.yaml, turn/*.conf,
ops/kubernetes/*.yaml and docs/operations.md, checked statically (no Docker engine, no cluster).

What must agree, and is checked here: the ICE UDP range configured for the relay, published by
compose, declared as hostPorts and EXPOSEd by the image; the coturn relay range of the conf files
and what compose publishes for it (and that the two ranges never overlap); the TURN REST secret
that coturn and the relay share; every env var the files set is a real setting (so a typo
fails); each environment loads with `aero_relay.config.load`; shutdown grace periods exceed
AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT (F-005); probes hit /healthz and /readyz (F-025, F-026);
the image writes the build metadata that /version serves (F-004, F-027).
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from aero_relay import buildinfo
from aero_relay.config import POLICY_ENV_VARS, SETTINGS, Config, load, split_listen_addr
from aero_relay.core import gofmt
from aero_relay.reference import rewrite_blocks
from aero_relay.startup_warnings import startup_warnings
from aero_relay.workers import port_slice

ROOT = Path(__file__).resolve().parents[1]
K8S_DIR = ROOT / "ops" / "kubernetes"
K8S_VERSIONS = ("1.30", "1.37")
KNOWN_ENV = frozenset(name for s in SETTINGS for name in s.envs) | frozenset(POLICY_ENV_VARS)
PROFILES = ("relay-only", "with-turn", "with-turn-rest")
# A realistic non-default host environment for compose interpolation.
HOST_ENV_CUSTOM = {
    "TURN_PUBLIC_HOST": "turn.example.com",
    "HOST_PUBLIC_IP": "203.0.113.10",
    "HOST_BIND_IP": "0.0.0.0",
    "TURN_REST_SHARED_SECRET": "s3cr3t-from-host",
    "TURN_REST_REALM": "turn.example.com",
    "AUTH_MODE": "api_key",
    "API_KEY": "k-123",
    "ALLOWED_ORIGINS": "https://aero.example.com",
    "ALLOW_UDP_CIDRS": "1.1.1.1/32",
    "ALLOW_UDP_PORTS": "53",
}
HOST_ENVS = {"defaults": {}, "custom": HOST_ENV_CUSTOM}


# --- helpers: Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in dockerfile_instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def image_env() -> dict[str, str]:
    """The ENV of the final stage (`ENV K=V K2=V2` form)."""
    env: dict[str, str] = {}
    for keyword, args in dockerfile_stages()[-1]:
        if keyword == "ENV":
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"use the ENV key=value form: {item!r}"
                env[key] = value
    return env


# --- helpers: compose ---------------------------------------------------------------------------

_COMPOSE_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}$]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: str, host_env: Mapping[str, str]) -> str:
    """Compose's variable interpolation: $$, ${V}, ${V:-d}, ${V-d}, ${V:?e}, ${V:+r}, $V."""

    def sub(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        val = host_env.get(name)
        if op == ":-":
            return val if val else arg
        if op == "-":
            return val if val is not None else arg
        if op in (":?", "?"):
            if not val if op == ":?" else val is None:
                raise ValueError(f"required variable {name} is missing: {arg}")
            return val or ""
        if op == ":+":
            return arg if val else ""
        if op == "+":
            return arg if val is not None else ""
        return val or ""

    return _COMPOSE_VAR.sub(sub, value)


def _interpolate_tree(node: Any, host_env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, host_env)
    if isinstance(node, list):
        return [_interpolate_tree(v, host_env) for v in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, host_env) for k, v in node.items()}
    return node


def compose(host_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "compose.yaml").read_text())
    result = _interpolate_tree(raw, host_env or {})
    assert isinstance(result, dict)
    return result


def services_in(profile: str, host_env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    return {
        name: svc for name, svc in compose(host_env)["services"].items() if profile in svc.get("profiles", [])
    }


def relay_service(profile: str, host_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    relays = [svc for svc in services_in(profile, host_env).values() if "build" in svc]
    assert len(relays) == 1, f"profile {profile} must run exactly one relay"
    return relays[0]


def coturn_service(profile: str, host_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    turns = [svc for svc in services_in(profile, host_env).values() if "coturn" in str(svc.get("image", ""))]
    assert len(turns) == 1, f"profile {profile} must run exactly one coturn"
    return turns[0]


def relay_env(profile: str, host_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The relay container's environment: the image ENV overridden by the service's."""
    env = image_env()
    env.update({k: str(v) for k, v in relay_service(profile, host_env)["environment"].items()})
    return env


def _port_range(text: str) -> range:
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


def published(service: Mapping[str, Any], protocol: str) -> list[tuple[range, range]]:
    """(host ports, container ports) of the short-syntax `ports` entries with that protocol."""
    out = []
    for spec in service.get("ports", []):
        body, _, proto = str(spec).partition("/")
        if (proto or "tcp") != protocol:
            continue
        parts = body.split(":")
        host, container = parts[-2], parts[-1]
        out.append((_port_range(host), _port_range(container)))
    return out


def coturn_conf(name: str) -> dict[str, list[str]]:
    """turnserver.conf options: name -> values ("" for a flag)."""
    opts: dict[str, list[str]] = {}
    for raw in (ROOT / "turn" / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        opts.setdefault(key.strip(), []).append(value.strip())
    return opts


def coturn_relay_range(conf: Mapping[str, list[str]]) -> range:
    return range(int(conf["min-port"][0]), int(conf["max-port"][0]) + 1)


def mounted_conf(service: Mapping[str, Any]) -> str:
    """The turn/*.conf file that a coturn service mounts and passes with -c."""
    command = list(service["command"])
    target = command[command.index("-c") + 1]
    for volume in service["volumes"]:
        source, container_path = str(volume).split(":")[:2]
        if container_path == target:
            assert source.startswith("./turn/")
            return source.removeprefix("./turn/")
    raise AssertionError(f"coturn config {target} is not mounted")


def ice_servers(env: Mapping[str, str]) -> list[dict[str, Any]]:
    servers = json.loads(env["AERO_ICE_SERVERS_JSON"])
    assert isinstance(servers, list)
    return servers


def turn_entries(env: Mapping[str, str]) -> list[dict[str, Any]]:
    return [s for s in ice_servers(env) if any(u.startswith(("turn:", "turns:")) for u in s["urls"])]


# --- helpers: Kubernetes ------------------------------------------------------------------------


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def k8s_kind(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in k8s_documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}"
    return found[0]


def k8s_container() -> dict[str, Any]:
    containers = k8s_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def k8s_env(host_ip: str = "198.51.100.7") -> dict[str, str]:
    """What the relay container sees: image ENV < ConfigMap < Secret < container env."""
    env = image_env()
    env.update(k8s_kind("ConfigMap")["data"])
    env.update(k8s_kind("Secret")["stringData"])
    for item in k8s_container().get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
            env[item["name"]] = host_ip
    return env


def named_port(container: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    matches = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert len(matches) == 1, f"no container port named {port}"
    value: int = matches[0]
    return value


# === Dockerfile ===================================================================================


def test_dockerfile_builds_a_wheel_then_installs_it_into_a_slim_python_311_runtime() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builder, runtime = stages[0], stages[-1]
    assert " AS builder" in builder[0][1]
    assert any(k == "RUN" and "pip wheel" in a for k, a in builder)
    base = runtime[0][1].split()[0]
    assert base.startswith("python:${PYTHON_VERSION}-slim")
    args = {
        a.split("=")[0]: a.split("=", 1)[1] for k, a in dockerfile_instructions() if k == "ARG" and "=" in a
    }
    assert args["PYTHON_VERSION"] == "3.11"


def test_runtime_stage_installs_only_the_builder_wheels_offline() -> None:
    runtime = dockerfile_stages()[-1]
    installs = [a for k, a in runtime if k == "RUN" and "pip install" in a]
    assert len(installs) == 1
    assert "from=builder" in installs[0] and "--no-index" in installs[0]
    assert "[test]" not in installs[0]
    # No project sources, compilers or package manager installs in the final image.
    assert not [a for k, a in runtime if k in ("COPY", "ADD")]
    assert not [a for k, a in runtime if k == "RUN" and re.search(r"apt-get|apk |gcc|build-essential", a)]


def test_runtime_runs_as_a_numeric_non_root_user() -> None:
    users = [a for k, a in dockerfile_stages()[-1] if k == "USER"]
    assert users, "the runtime stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0
    assert gid.isdigit() and int(gid) > 0


def test_image_listens_on_all_interfaces_port_8080_and_exposes_the_ice_range() -> None:
    env = image_env()
    assert env["AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR"] == "0.0.0.0:8080"
    exposed = " ".join(a for k, a in dockerfile_stages()[-1] if k == "EXPOSE").split()
    assert "8080/tcp" in exposed
    udp = [_port_range(p.removesuffix("/udp")) for p in exposed if p.endswith("/udp")]
    assert udp == [range(int(env["WEBRTC_UDP_PORT_MIN"]), int(env["WEBRTC_UDP_PORT_MAX"]) + 1)]


def test_image_env_vars_are_known_settings() -> None:
    relay_vars = {k for k in image_env() if not k.startswith(("PYTHON", "PIP_"))}
    assert relay_vars <= KNOWN_ENV, relay_vars - KNOWN_ENV


def test_entrypoint_is_the_console_script_serving_by_default() -> None:
    ins = dict(dockerfile_stages()[-1])
    assert json.loads(ins["ENTRYPOINT"]) == ["aero-relay"]
    assert json.loads(ins["CMD"]) == ["serve"]


def _build_info_command() -> list[str]:
    runs = [a for k, a in dockerfile_stages()[-1] if k == "RUN" and "_build_info.json" in a]
    assert len(runs) == 1
    argv = shlex.split(runs[0])
    assert argv[:3] == ["python", "-I", "-c"]
    return argv


def test_build_args_are_declared_in_the_runtime_stage() -> None:
    args = [a.split("=")[0] for k, a in dockerfile_stages()[-1] if k == "ARG"]
    assert "BUILD_COMMIT" in args and "BUILD_TIME" in args
    _build_info_command()


def test_build_info_step_writes_what_version_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """F-004/F-027: the RUN step writes {"commit","buildTime"} next to the installed package."""
    code = _build_info_command()[3]
    fake_pkg = tmp_path / "aero_relay"
    fake_pkg.mkdir()
    (fake_pkg / "__init__.py").write_text("")
    commit, built = 'abc"123\\', "2026-01-02T03:04:05Z"
    # -I would hide PYTHONPATH; the fake package stands in for the installed one.
    subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(tmp_path), "BUILD_COMMIT": commit, "BUILD_TIME": built},
        check=True,
        cwd=tmp_path,
    )
    written = fake_pkg / "_build_info.json"
    assert json.loads(written.read_text()) == {"commit": commit, "buildTime": built}
    monkeypatch.setattr(buildinfo, "_BUILD_FILE", written)
    assert buildinfo.load_build_info() == buildinfo.BuildInfo(commit, built)


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()
        self.wfile.write(b'{"ok":true}\n')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HealthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _healthcheck_argv() -> list[str]:
    (args,) = [a for k, a in dockerfile_stages()[-1] if k == "HEALTHCHECK"]
    _, _, cmd = args.partition(" CMD ")
    argv = json.loads(cmd)
    assert argv[0] == "python" and "/healthz" in argv[-1] and "urllib" in argv[-1]
    return [sys.executable, *argv[1:]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_healthcheck_passes_when_healthz_answers(health_server: int) -> None:
    env = {
        "AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR": f"0.0.0.0:{health_server}",
        "HTTP_PROXY": "http://192.0.2.1:9",
    }
    assert subprocess.run(_healthcheck_argv(), env=env, capture_output=True).returncode == 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    env = {"AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR": f"0.0.0.0:{_free_port()}"}
    assert subprocess.run(_healthcheck_argv(), env=env, capture_output=True).returncode != 0


def _glob_regex(pattern: str) -> str:
    """Go filepath.Match syntax plus `**` (any number of directories), as .dockerignore uses."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent matches too."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, re.compile(_glob_regex(line.removeprefix("!").strip("/")) + r"\Z")))
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(c) for c in candidates):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "README.md", "LICENSE", "aero_relay/__init__.py", "aero_relay/core/frames.py"]
)
def test_dockerignore_keeps_what_the_build_copies(path: str) -> None:
    assert not _dockerignore_excludes(path)
    assert (ROOT / path).exists()


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_cli.py",
        "e2e/harness.py",
        "aero_relay/__pycache__/cli.cpython-311.pyc",
        "aero_relay/core/frames.pyc",
        "aero_relay/_build_info.json",
    ],
)
def test_dockerignore_drops_everything_else(path: str) -> None:
    assert _dockerignore_excludes(path)


def test_builder_copies_only_paths_in_the_context() -> None:
    for keyword, args in dockerfile_stages()[0]:
        if keyword == "COPY":
            for source in shlex.split(args)[:-1]:
                assert not _dockerignore_excludes(source), source


# === compose.yaml =================================================================================


def test_each_profile_runs_one_relay_and_turn_profiles_one_coturn() -> None:
    for profile in PROFILES:
        relay_service(profile)
    for profile in ("with-turn", "with-turn-rest"):
        coturn_service(profile)
    assert not [s for s in services_in("relay-only").values() if "build" not in s]


@pytest.mark.parametrize("host", HOST_ENVS)
@pytest.mark.parametrize("profile", PROFILES)
def test_relay_publishes_exactly_its_configured_ice_range(profile: str, host: str) -> None:
    env = relay_env(profile, HOST_ENVS[host])
    configured = range(int(env["WEBRTC_UDP_PORT_MIN"]), int(env["WEBRTC_UDP_PORT_MAX"]) + 1)
    assert published(relay_service(profile, HOST_ENVS[host]), "udp") == [(configured, configured)]


@pytest.mark.parametrize("profile", PROFILES)
def test_relay_publishes_its_http_listen_port(profile: str) -> None:
    _, port = split_listen_addr(relay_env(profile)["AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR"])
    assert published(relay_service(profile), "tcp") == [(range(port, port + 1), range(port, port + 1))]


@pytest.mark.parametrize("profile", ["with-turn", "with-turn-rest"])
def test_coturn_publishes_its_conf_relay_range_and_listening_port(profile: str) -> None:
    svc = coturn_service(profile)
    conf = coturn_conf(mounted_conf(svc))
    relay_range = coturn_relay_range(conf)
    listen = int(conf["listening-port"][0])
    assert sorted(published(svc, "udp"), key=lambda p: p[0].start) == [
        (range(listen, listen + 1), range(listen, listen + 1)),
        (relay_range, relay_range),
    ]


@pytest.mark.parametrize("conf_name", ["turnserver.conf", "turnserver-rest.conf"])
def test_relay_ice_range_does_not_overlap_coturn_ports(conf_name: str) -> None:
    conf = coturn_conf(conf_name)
    turn_ports = set(coturn_relay_range(conf)) | {int(conf["listening-port"][0])}
    for profile in PROFILES:
        env = relay_env(profile)
        relay_ports = set(range(int(env["WEBRTC_UDP_PORT_MIN"]), int(env["WEBRTC_UDP_PORT_MAX"]) + 1))
        assert not relay_ports & turn_ports
        # Nothing published twice on the host either.
        host_ports = [
            p for svc in services_in(profile).values() for hp, _ in published(svc, "udp") for p in hp
        ]
        assert len(host_ports) == len(set(host_ports))


def test_both_conf_files_use_the_same_turn_ports() -> None:
    static, rest = coturn_conf("turnserver.conf"), coturn_conf("turnserver-rest.conf")
    assert coturn_relay_range(static) == coturn_relay_range(rest) == range(49152, 49201)
    assert static["listening-port"] == rest["listening-port"] == ["3478"]


@pytest.mark.parametrize("host", HOST_ENVS)
def test_with_turn_relay_advertises_the_static_user_of_turnserver_conf(host: str) -> None:
    conf = coturn_conf(mounted_conf(coturn_service("with-turn", HOST_ENVS[host])))
    assert "lt-cred-mech" in conf and "use-auth-secret" not in conf
    (user,) = conf["user"]
    username, _, password = user.partition(":")
    env = relay_env("with-turn", HOST_ENVS[host])
    assert "TURN_REST_SHARED_SECRET" not in env
    entries = turn_entries(env)
    assert entries and all(e["username"] == username and e["credential"] == password for e in entries)


@pytest.mark.parametrize("host", HOST_ENVS)
def test_with_turn_rest_shares_one_secret_and_realm_between_coturn_and_relay(host: str) -> None:
    env = relay_env("with-turn-rest", HOST_ENVS[host])
    command = list(coturn_service("with-turn-rest", HOST_ENVS[host])["command"])
    assert "--use-auth-secret" in command
    secrets = [c.partition("=")[2] for c in command if c.startswith("--static-auth-secret=")]
    realms = [c.partition("=")[2] for c in command if c.startswith("--realm=")]
    assert secrets == [env["TURN_REST_SHARED_SECRET"]] and secrets[0].strip()
    assert realms == [env["TURN_REST_REALM"]]
    if host == "custom":
        assert secrets[0] == HOST_ENV_CUSTOM["TURN_REST_SHARED_SECRET"]


@pytest.mark.parametrize("host", HOST_ENVS)
def test_with_turn_rest_relay_lists_turn_without_credentials_so_it_mints_them(host: str) -> None:
    """F-033: TURN servers get per-request credentials, so none are configured."""
    entries = turn_entries(relay_env("with-turn-rest", HOST_ENVS[host]))
    assert entries and all("username" not in e and "credential" not in e for e in entries)


def test_turn_rest_conf_uses_the_auth_secret_and_holds_no_credentials() -> None:
    conf = coturn_conf("turnserver-rest.conf")
    assert "use-auth-secret" in conf
    assert not {"user", "static-auth-secret", "lt-cred-mech"} & conf.keys()
    assert conf["realm"] == ["aero.local"]


@pytest.mark.parametrize("profile", ["with-turn", "with-turn-rest"])
def test_turn_public_host_is_the_host_of_the_advertised_turn_urls(profile: str) -> None:
    for host_env, expected in (({}, "localhost"), (HOST_ENV_CUSTOM, HOST_ENV_CUSTOM["TURN_PUBLIC_HOST"])):
        for entry in turn_entries(relay_env(profile, host_env)):
            for url in entry["urls"]:
                assert url.split(":")[1] == expected


@pytest.mark.parametrize("profile", ["with-turn", "with-turn-rest"])
def test_coturn_advertises_the_same_public_ip_as_the_relay(profile: str) -> None:
    for host_env in HOST_ENVS.values():
        command = coturn_service(profile, host_env)["command"]
        external = [c.partition("=")[2] for c in command if c.startswith("--external-ip=")]
        assert external == [relay_env(profile, host_env)["WEBRTC_NAT_1TO1_IPS"]]


@pytest.mark.parametrize("profile", PROFILES)
def test_compose_relay_env_vars_are_known_settings(profile: str) -> None:
    names = set(relay_service(profile)["environment"])
    assert names <= KNOWN_ENV, names - KNOWN_ENV


@pytest.mark.parametrize("host", HOST_ENVS)
@pytest.mark.parametrize("profile", PROFILES)
def test_config_load_accepts_the_relay_env_of_each_profile(profile: str, host: str) -> None:
    env = relay_env(profile, HOST_ENVS[host])
    cfg = load(env)
    assert cfg.ice.error == ""
    assert (cfg.webrtc_udp_port_min, cfg.webrtc_udp_port_max) == (
        int(env["WEBRTC_UDP_PORT_MIN"]),
        int(env["WEBRTC_UDP_PORT_MAX"]),
    )
    assert cfg.turn_rest_enabled == (profile == "with-turn-rest")
    assert bool(cfg.ice.servers) == (profile != "relay-only")


@pytest.mark.parametrize("profile", PROFILES)
def test_stop_grace_period_exceeds_the_shutdown_timeout(profile: str) -> None:
    """F-005: SIGKILL must not cut the graceful shutdown short."""
    cfg = load(relay_env(profile))
    grace = gofmt.parse_duration(relay_service(profile)["stop_grace_period"])
    assert grace > cfg.shutdown_timeout + 1


def test_compose_mounts_conf_files_that_exist() -> None:
    for profile in ("with-turn", "with-turn-rest"):
        assert (ROOT / "turn" / mounted_conf(coturn_service(profile))).is_file()


# === Kubernetes ===================================================================================


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    ("name", "doc"), k8s_documents(), ids=[f"{n}:{d['kind']}" for n, d in k8s_documents()]
)
def test_manifest_validates_against_the_kubernetes_schema(
    name: str, doc: dict[str, Any], version: str
) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_catches_a_misspelt_field() -> None:
    doc = copy.deepcopy(k8s_kind("Deployment"))
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)


def test_manifests_hold_the_expected_kinds() -> None:
    kinds = sorted(doc["kind"] for _, doc in k8s_documents())
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"]


def test_probes_hit_healthz_for_liveness_and_readyz_for_readiness_on_the_listen_port() -> None:
    container = k8s_container()
    _, listen_port = split_listen_addr(k8s_env()["AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR"])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert named_port(container, get["port"]) == listen_port


def _pre_stop_seconds(container: Mapping[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if not pre_stop:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep"
    return float(command[1])


def test_termination_grace_period_exceeds_pre_stop_plus_shutdown_timeout() -> None:
    """F-005: the kubelet must not SIGKILL the relay during its graceful shutdown."""
    cfg = load(k8s_env())
    pod = k8s_kind("Deployment")["spec"]["template"]["spec"]
    # The relay itself waits up to shutdown timeout + 1 s (aero_relay/server.py).
    assert (
        pod["terminationGracePeriodSeconds"] > _pre_stop_seconds(k8s_container()) + cfg.shutdown_timeout + 1
    )


def test_pod_runs_non_root_read_only_without_capabilities() -> None:
    pod = k8s_kind("Deployment")["spec"]["template"]["spec"]
    container = k8s_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    (user,) = [a for k, a in dockerfile_stages()[-1] if k == "USER"]
    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == user
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert not pod.get("hostNetwork", False)


def test_container_sets_requests_and_limits() -> None:
    resources = k8s_container()["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[kind].keys()


def test_host_ports_are_exactly_the_configured_ice_range() -> None:
    env = k8s_env()
    configured = list(range(int(env["WEBRTC_UDP_PORT_MIN"]), int(env["WEBRTC_UDP_PORT_MAX"]) + 1))
    udp = [p for p in k8s_container()["ports"] if p["protocol"] == "UDP"]
    assert [p["containerPort"] for p in udp] == configured
    assert all(p["hostPort"] == p["containerPort"] for p in udp)


def test_k8s_ice_range_matches_the_image_and_compose() -> None:
    env, img, dc = k8s_env(), image_env(), relay_env("relay-only")
    key = ("WEBRTC_UDP_PORT_MIN", "WEBRTC_UDP_PORT_MAX")
    assert [env[k] for k in key] == [img[k] for k in key] == [dc[k] for k in key]


def test_pods_advertise_the_node_address() -> None:
    (item,) = [e for e in k8s_container()["env"] if e["name"] == "WEBRTC_NAT_1TO1_IPS"]
    assert item["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"


def test_service_and_pdb_select_the_pods_and_the_service_targets_http() -> None:
    labels = k8s_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = k8s_kind("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    _, listen_port = split_listen_addr(k8s_env()["AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR"])
    assert named_port(k8s_container(), port["targetPort"]) == listen_port
    assert k8s_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert k8s_kind("Deployment")["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_deployment_reads_the_configmap_and_secret() -> None:
    refs = k8s_container()["envFrom"]
    assert {"configMapRef": {"name": k8s_kind("ConfigMap")["metadata"]["name"]}} in refs
    assert {"secretRef": {"name": k8s_kind("Secret")["metadata"]["name"]}} in refs


def test_k8s_env_vars_are_known_settings() -> None:
    names = set(k8s_kind("ConfigMap")["data"]) | set(k8s_kind("Secret")["stringData"])
    names |= {e["name"] for e in k8s_container()["env"]}
    assert names <= KNOWN_ENV, names - KNOWN_ENV


def test_secrets_live_in_the_secret_not_the_configmap() -> None:
    secret_envs = {name for s in SETTINGS if s.secret for name in s.envs} - {"AERO_ICE_SERVERS_JSON"}
    assert not secret_envs & set(k8s_kind("ConfigMap")["data"])
    # The ConfigMap's ICE list carries no credentials (TURN REST mints them).
    assert all("credential" not in s for s in ice_servers(k8s_kind("ConfigMap")["data"]))


def _k8s_config() -> Config:
    return load(k8s_env())


def test_config_load_accepts_the_k8s_env_as_a_prod_profile_without_startup_warnings() -> None:
    cfg = _k8s_config()
    assert cfg.is_prod and cfg.auth_mode == "jwt" and cfg.turn_rest_enabled
    assert cfg.ice.error == ""
    assert cfg.webrtc_nat_1to1_ips == ("198.51.100.7",)
    assert [w.code for w in startup_warnings(cfg)] == []


def test_k8s_max_sessions_fit_the_ice_port_range() -> None:
    """One ICE port per WebRTC session (one host address per pod)."""
    cfg = _k8s_config()
    assert 0 < cfg.max_sessions <= cfg.webrtc_udp_port_max - cfg.webrtc_udp_port_min + 1


@pytest.mark.parametrize(
    ("ip", "port", "allowed"),
    [
        ("1.1.1.1", 53, True),
        ("8.8.8.8", 53, True),
        ("1.1.1.1", 123, False),
        ("9.9.9.9", 53, False),
        ("10.0.0.1", 53, False),
        ("169.254.169.254", 53, False),
    ],
)
def test_k8s_destination_policy_is_dns_only(ip: str, port: int, allowed: bool) -> None:
    policy = _k8s_config().policy
    assert (policy.check(socket.inet_aton(ip), port) is None) == allowed


# === Kubernetes: several replicas with Redis (ops/kubernetes/replicas/) ===========================

REPLICAS_DIR = K8S_DIR / "replicas"


def replica_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(REPLICAS_DIR.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]


def replica_doc(kind: str, component: str) -> dict[str, Any]:
    found = [
        doc
        for _, doc in replica_documents()
        if doc["kind"] == kind and doc["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    assert len(found) == 1, f"expected one {kind} for {component}"
    return found[0]


def replica_relay_pod() -> dict[str, Any]:
    pod: dict[str, Any] = replica_doc("Deployment", "relay")["spec"]["template"]["spec"]
    return pod


def replica_relay_container() -> dict[str, Any]:
    (container,) = replica_relay_pod()["containers"]
    assert isinstance(container, dict)
    return container


def replica_relay_env(host_ip: str = "198.51.100.7") -> dict[str, str]:
    """What a replica's relay sees: image ENV < the base ConfigMap < Secret < container env."""
    refs = replica_relay_container()["envFrom"]
    assert {"configMapRef": {"name": k8s_kind("ConfigMap")["metadata"]["name"]}} in refs
    assert {"secretRef": {"name": k8s_kind("Secret")["metadata"]["name"]}} in refs
    env = image_env()
    env.update(k8s_kind("ConfigMap")["data"])
    env.update(k8s_kind("Secret")["stringData"])
    for item in replica_relay_container()["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
            env[item["name"]] = host_ip
    return env


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    ("name", "doc"), replica_documents(), ids=[f"{n}:{d['kind']}" for n, d in replica_documents()]
)
def test_replica_manifest_validates_against_the_kubernetes_schema(
    name: str, doc: dict[str, Any], version: str
) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_replica_manifests_hold_redis_and_the_relay_variant() -> None:
    kinds = sorted(
        (d["kind"], d["metadata"]["labels"]["app.kubernetes.io/component"]) for _, d in replica_documents()
    )
    assert kinds == [
        ("Deployment", "registry"),
        ("Deployment", "relay"),
        ("NetworkPolicy", "registry"),
        ("Service", "registry"),
    ]
    # The variant replaces ../deployment.yaml: same name, same pod labels (Service, PDB).
    base, variant = k8s_kind("Deployment"), replica_doc("Deployment", "relay")
    assert variant["metadata"]["name"] == base["metadata"]["name"]
    assert variant["spec"]["template"]["metadata"]["labels"] == base["spec"]["template"]["metadata"]["labels"]


def test_every_replica_uses_the_redis_service_as_its_session_registry() -> None:
    env = replica_relay_env()
    service = replica_doc("Service", "registry")
    (port,) = service["spec"]["ports"]
    assert env["SESSION_REGISTRY_URL"] == f"redis://{service['metadata']['name']}:{port['port']}/0"
    cfg = load(env)
    assert cfg.session_registry_url == env["SESSION_REGISTRY_URL"]
    assert replica_doc("Deployment", "relay")["spec"]["replicas"] >= 2


def test_redis_service_selects_only_the_redis_pods() -> None:
    redis_labels = replica_doc("Deployment", "registry")["spec"]["template"]["metadata"]["labels"]
    relay_labels = replica_doc("Deployment", "relay")["spec"]["template"]["metadata"]["labels"]
    selector = replica_doc("Service", "registry")["spec"]["selector"]
    assert selector.items() <= redis_labels.items() and not selector.items() <= relay_labels.items()
    # ... and the base relay Service and PDB do not pick up the Redis pod.
    assert not k8s_kind("Service")["spec"]["selector"].items() <= redis_labels.items()
    assert (
        not k8s_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= redis_labels.items()
    )
    (container,) = replica_doc("Deployment", "registry")["spec"]["template"]["spec"]["containers"]
    assert named_port(container, replica_doc("Service", "registry")["spec"]["ports"][0]["targetPort"]) == 6379


def test_only_relay_pods_may_reach_redis() -> None:
    policy = replica_doc("NetworkPolicy", "registry")["spec"]
    redis_labels = replica_doc("Deployment", "registry")["spec"]["template"]["metadata"]["labels"]
    relay_labels = replica_doc("Deployment", "relay")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= redis_labels.items()
    (rule,) = policy["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= relay_labels.items()


def test_redis_keeps_no_persistence() -> None:
    """Leases live SESSION_LEASE_TTL and are re-claimed: no RDB snapshots, no AOF."""
    (container,) = replica_doc("Deployment", "registry")["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--save") + 1] == "" and args[args.index("--appendonly") + 1] == "no"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_each_replica_runs_several_workers_with_port_slices_of_at_least_100() -> None:
    cfg = load(replica_relay_env())
    assert cfg.workers == int(replica_relay_env()["AERO_RELAY_WORKERS"]) >= 2
    slices = [
        port_slice(cfg.webrtc_udp_port_min, cfg.webrtc_udp_port_max, i, cfg.workers)
        for i in range(cfg.workers)
    ]
    assert all(last - first + 1 >= 100 for first, last in slices)
    # Together the slices cover the range exactly once.
    covered = [p for first, last in slices for p in range(first, last + 1)]
    assert covered == list(range(cfg.webrtc_udp_port_min, cfg.webrtc_udp_port_max + 1))


def test_replica_host_ports_are_exactly_the_configured_ice_range() -> None:
    env = replica_relay_env()
    configured = list(range(int(env["WEBRTC_UDP_PORT_MIN"]), int(env["WEBRTC_UDP_PORT_MAX"]) + 1))
    udp = [p for p in replica_relay_container()["ports"] if p["protocol"] == "UDP"]
    assert [p["containerPort"] for p in udp] == configured
    assert all(p["hostPort"] == p["containerPort"] for p in udp)


def test_replicas_advertise_their_node_address() -> None:
    (item,) = [e for e in replica_relay_container()["env"] if e["name"] == "WEBRTC_NAT_1TO1_IPS"]
    assert item["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert load(replica_relay_env("203.0.113.9")).webrtc_nat_1to1_ips == ("203.0.113.9",)


def test_replicas_run_one_pod_per_node() -> None:
    """Each pod owns its node's ICE hostPorts: required anti-affinity on the hostname, no surge."""
    deployment = replica_doc("Deployment", "relay")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (term,) = replica_relay_pod()["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert not replica_relay_pod().get("hostNetwork", False)


def test_replica_max_sessions_fit_all_replicas_ice_ports() -> None:
    """MAX_SESSIONS is global with a shared registry: at most one ICE port per session overall."""
    cfg = load(replica_relay_env())
    replicas = replica_doc("Deployment", "relay")["spec"]["replicas"]
    per_pod = cfg.webrtc_udp_port_max - cfg.webrtc_udp_port_min + 1
    assert 0 < cfg.max_sessions <= replicas * per_pod


def test_replica_env_is_known_settings_and_loads_without_startup_warnings() -> None:
    names = {e["name"] for e in replica_relay_container()["env"]}
    assert names <= KNOWN_ENV, names - KNOWN_ENV
    cfg = load(replica_relay_env())
    assert cfg.is_prod and cfg.ice.error == ""
    assert [w.code for w in startup_warnings(cfg)] == []


def test_k8s_readme_documents_every_replica_file() -> None:
    text = (K8S_DIR / "README.md").read_text()
    assert "\n## Several replicas with Redis" in text
    for path in sorted(REPLICAS_DIR.glob("*.yaml")):
        assert f"`replicas/{path.name}`" in text
    for name in re.findall(r"`replicas/([a-z-]+\.yaml)`", text):
        assert (REPLICAS_DIR / name).is_file(), name


def test_replica_termination_grace_period_exceeds_pre_stop_plus_shutdown_timeout() -> None:
    """F-005, as for the single-replica Deployment."""
    cfg = load(replica_relay_env())
    assert (
        replica_relay_pod()["terminationGracePeriodSeconds"]
        > _pre_stop_seconds(replica_relay_container()) + cfg.shutdown_timeout + 1
    )


# === docs =========================================================================================

OPERATIONS = ROOT / "docs" / "operations.md"


def test_operations_metrics_block_is_current() -> None:
    text = OPERATIONS.read_text()
    assert "<!-- metrics-table:start -->" in text and "<!-- metrics-table:end -->" in text
    assert rewrite_blocks(text) == text, "run: .venv/bin/python -m aero_relay.reference docs/operations.md"


def test_operations_lists_every_startup_warning_code() -> None:
    source = (ROOT / "aero_relay" / "startup_warnings.py").read_text()
    codes = re.findall(r'add\(\s*"([a-z0-9_]+)"', source)
    assert len(codes) == 10
    text = OPERATIONS.read_text()
    for code in codes:
        assert f"`{code}`" in text


def _doc_export_blocks() -> list[dict[str, str]]:
    blocks = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", OPERATIONS.read_text(), re.S):
        exports = re.findall(r"^export ([A-Z0-9_]+)=(.*)$", block, re.M)
        if exports:
            blocks.append({name: shlex.split(value)[0] if value.strip() else "" for name, value in exports})
    return blocks


def test_operations_env_recipes_use_known_settings_and_load() -> None:
    blocks = _doc_export_blocks()
    assert len(blocks) >= 5
    for block in blocks:
        assert set(block) <= KNOWN_ENV, set(block) - KNOWN_ENV
        env = {"AUTH_MODE": "none", "AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR": "127.0.0.1:8080", **block}
        if env.get("AUTH_MODE") == "api_key":
            env.setdefault("API_KEY", "k")
        if env.get("AUTH_MODE") == "jwt":
            env.setdefault("JWT_SECRET", "s")
        cfg = load(env)
        assert cfg.ice.error == "", block


def test_operations_and_readme_point_to_files_that_exist() -> None:
    text = OPERATIONS.read_text() + (ROOT / "README.md").read_text() + (K8S_DIR / "README.md").read_text()
    for path in ("Dockerfile", "compose.yaml", "turn/turnserver.conf", "turn/turnserver-rest.conf"):
        assert f"`{path}`" in text
        assert (ROOT / path).is_file()
    for path in re.findall(r"`(ops/kubernetes/[a-z-]+\.(?:yaml|md))`", text):
        assert (ROOT / path).is_file(), path


def test_readme_has_a_deployment_section_pointing_to_the_files() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "\n## Deployment\n" in readme
    section = readme.split("\n## Deployment\n", 1)[1].split("\n## ", 1)[0]
    for path in ("Dockerfile", "compose.yaml", "ops/kubernetes/", "docs/operations.md"):
        assert path in section
