"""Checks of deploy/ that no tool on the project's machines makes (used by
scripts/check-deploy, which runs the tools that exist: systemd-analyze,
hadolint, docker-compose, nudge check-config, prosodyctl).

    deploy_checks.py copy-sources CONTAINERFILE CONTEXT
        every COPY/ADD source (not --from a stage) exists under CONTEXT and
        is not excluded by CONTEXT/.dockerignore
    deploy_checks.py healthcheck CONTAINERFILE
        prints the HEALTHCHECK's command (exec form) as a shell-quoted line
    deploy_checks.py compose RENDERED_YAML OUT_DIR
        checks the output of `docker-compose config` against what
        deploy/compose.yaml promises (README, "Run with compose") and writes
        OUT_DIR/nudge.env and OUT_DIR/prosody.env, the environments the
        services get, for `nudge check-config` and `prosodyctl check config`

Exit status 1 with one line per problem; standard library and PyYAML only
(Debian's python3-yaml, a dependency of docker-compose).
"""

import fnmatch
import json
import os
import shlex
import sys


def instructions(path):
    """(keyword, arguments) of each instruction, continuation lines joined."""
    out, current = [], ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            current += line
            keyword, _, rest = current.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
            current = ""
    return out


def dockerignore(context):
    path = os.path.join(context, ".dockerignore")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [
            line.strip().rstrip("/")
            for line in f
            if line.strip() and not line.lstrip().startswith("#")
        ]


def ignored(source, patterns):
    parts = source.strip("/").split("/")
    for pattern in patterns:
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(parts[i - 1], pattern):
                return pattern
    return None


def copy_sources(containerfile, context):
    problems, patterns = [], dockerignore(context)
    for keyword, args in instructions(containerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        if args.lstrip().startswith("["):
            words = json.loads(args)
        for source in words[:-1]:
            if not os.path.exists(os.path.join(context, source)):
                problems.append(f"{containerfile}: {keyword} {source}: no such path in {context}")
            elif (pattern := ignored(source, patterns)) is not None:
                problems.append(f"{containerfile}: {keyword} {source}: excluded by .dockerignore ({pattern})")
    return problems


def healthcheck(containerfile):
    for keyword, args in instructions(containerfile):
        if keyword == "HEALTHCHECK":
            command = args[args.index("CMD") + 3 :].strip()
            exec_form = json.loads(command)
            return shlex.join(exec_form)
    raise SystemExit(f"{containerfile}: no HEALTHCHECK")


def compose(rendered, out_dir):
    import yaml

    with open(rendered, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    problems = []
    services = doc.get("services", {})
    for name in ("nudge", "postgres", "prosody"):
        if name not in services:
            problems.append(f"no service {name}")
    if problems:
        return problems
    nudge, postgres, prosody = services["nudge"], services["postgres"], services["prosody"]

    build = nudge.get("build", {})
    if not str(build.get("dockerfile", "")).endswith("deploy/Containerfile"):
        problems.append("nudge is not built from deploy/Containerfile")
    for port in nudge.get("ports", []):
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        if host_ip != "127.0.0.1":
            problems.append(f"nudge publishes {port} beyond the host's loopback")
    if not nudge.get("ports"):
        problems.append("nudge publishes no HTTP port")
    test = " ".join(nudge.get("healthcheck", {}).get("test", []))
    if "/ready" not in test:
        problems.append("nudge's healthcheck does not ask /ready")
    if "test" not in postgres.get("healthcheck", {}):
        problems.append("postgres has no healthcheck")
    if nudge.get("depends_on", {}).get("postgres", {}).get("condition") != "service_healthy":
        problems.append("nudge does not wait for a healthy postgres")

    env = nudge.get("environment", {})
    for key in ("NUDGE_STORAGE__URL", "NUDGE_COMPONENT__HOST", "NUDGE_COMPONENT__SECRET", "NUDGE_COMPONENT__DOMAIN"):
        if key not in env:
            problems.append(f"nudge's environment has no {key}")
    if env.get("NUDGE_COMPONENT__HOST") != "prosody":
        problems.append("NUDGE_COMPONENT__HOST is not the prosody service")
    penv = prosody.get("environment", {})
    if penv.get("NUDGE_COMPONENT_SECRET") != env.get("NUDGE_COMPONENT__SECRET"):
        problems.append("Prosody and Nudge do not get the same component secret")
    if penv.get("NUDGE_COMPONENT_DOMAIN") != env.get("NUDGE_COMPONENT__DOMAIN"):
        problems.append("Prosody and Nudge do not get the same component domain")
    password = postgres.get("environment", {}).get("POSTGRES_PASSWORD", "")
    if not password or f":{password}@postgres:" not in str(env.get("NUDGE_STORAGE__URL", "")):
        problems.append("NUDGE_STORAGE__URL does not carry postgres's password and host")
    for service, variables in (("nudge", env), ("prosody", penv), ("postgres", postgres.get("environment", {}))):
        for key, value in variables.items():
            if value is None or "$" in str(value):
                problems.append(f"{service}: {key} is not fully interpolated: {value!r}")

    for service in (nudge, prosody):
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("/") and not os.path.exists(source):
                problems.append(f"mounted path {source} does not exist")

    os.makedirs(out_dir, exist_ok=True)
    for name, variables in (("nudge", env), ("prosody", penv)):
        with open(os.path.join(out_dir, f"{name}.env"), "w", encoding="utf-8") as f:
            for key, value in variables.items():
                f.write(f"{key}={value}\n")
    return problems


def main(argv):
    if len(argv) == 4 and argv[1] == "copy-sources":
        problems = copy_sources(argv[2], argv[3])
    elif len(argv) == 3 and argv[1] == "healthcheck":
        print(healthcheck(argv[2]))
        return 0
    elif len(argv) == 4 and argv[1] == "compose":
        problems = compose(argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
