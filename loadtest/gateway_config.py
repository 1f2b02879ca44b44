#!/usr/bin/env python3
"""Derive a temp gateway config from conf/demo.yaml for the load tests and the systemd checks.

    gateway_config.py SRC DST --mock 127.0.0.1:PORT --listen 127.0.0.1:PORT [--metrics ADDR|none]
                      --workdir DIR [--set server.KEY=VALUE ...]

Every upstream URL pointing at the demo mock (127.0.0.1:9901) is rewritten to --mock; pid_file and
upgrade_sock go into --workdir so nothing touches /tmp/cheapmodel-demo.* or /run. --set values are
parsed as YAML (threads=1, access_log=false, keys.0.limits={rpm: 100}); a number in the path
indexes a list.
"""
import argparse
import sys

import yaml


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--mock", required=True, help="HOST:PORT of the mock upstream")
    ap.add_argument("--listen", required=True, help="HOST:PORT for the gateway listener")
    ap.add_argument("--metrics", default="none", help="HOST:PORT for /metrics, or none")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="server.KEY=VALUE")
    a = ap.parse_args()

    for addr in (a.mock, a.listen) + ((a.metrics,) if a.metrics != "none" else ()):
        if not addr.startswith("127.0.0.1:"):
            print(f"refusing non-loopback address {addr}", file=sys.stderr)
            return 2

    with open(a.src) as f:
        cfg = yaml.safe_load(f)
    srv = cfg["server"]
    srv["listen"] = [a.listen]
    if a.metrics == "none":
        srv.pop("metrics", None)
    else:
        srv["metrics"] = a.metrics
    srv["pid_file"] = f"{a.workdir}/cheapmodel.pid"
    srv["upgrade_sock"] = f"{a.workdir}/upgrade.sock"
    for up in cfg.get("upstreams", {}).values():
        url = up["url"]
        for old in ("127.0.0.1:9901", "localhost:9901"):
            url = url.replace(old, a.mock)
        if "127.0.0.1" not in url and "localhost" not in url:
            print(f"refusing non-loopback upstream {url}", file=sys.stderr)
            return 2
        up["url"] = url
    for kv in a.set:
        key, _, val = kv.partition("=")
        parts = key.split(".")
        node = cfg
        for p in parts[:-1]:
            # A number indexes a list (keys.0.limits.rpm).
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(val)
    with open(a.dst, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
