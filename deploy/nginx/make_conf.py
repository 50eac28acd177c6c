#!/usr/bin/env python3
"""Renders deploy/nginx/earnserve.conf.template into an nginx configuration for N replicas.

Writes PREFIX/nginx.conf (or --output) and creates PREFIX/logs and PREFIX/tmp, so that nginx can
run unprivileged with everything under PREFIX:

  deploy/nginx/make_conf.py --prefix /tmp/es-lb --listen 127.0.0.1:8000 \\
      --replica 127.0.0.1:8001 --replica 127.0.0.1:8002
  nginx -p /tmp/es-lb -c /tmp/es-lb/nginx.conf -e /tmp/es-lb/logs/error.log -g 'daemon off;'

Bad arguments give a one-line error and exit status 2. Standard library only (it also runs from
tools/replicas.sh with the system python3).
"""
import argparse
import os
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "earnserve.conf.template"

# nginx sizes and times: "4m", "512k", "10s", "1h", "3600" (seconds).
_SIZE = re.compile(r"^[0-9]+[kKmMgG]?$")
_TIME = re.compile(r"^[0-9]+(ms|s|m|h|d)?$")


class ConfError(Exception):
    pass


def parse_address(text, what):
    """'PORT' (loopback) or 'HOST:PORT' -> 'HOST:PORT'; HOST an IPv4 address or a plain name."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    if not re.fullmatch(r"[A-Za-z0-9.\-]+", host):
        raise ConfError(f"{what} '{text}': bad host")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfError(f"{what} '{text}': the port must be a number in [1, 65535]")
    return f"{host}:{int(port)}"


def render(template_text, prefix, listen, replicas, max_fails=2, fail_timeout="10s",
           read_timeout="3600s", max_body="4m"):
    """Returns the configuration text. `replicas` is a list of 'HOST:PORT' strings."""
    if not os.path.isabs(prefix):
        raise ConfError(f"--prefix '{prefix}' must be an absolute path")
    if re.search(r"[\s;{}'\"$#\\]", prefix):
        raise ConfError(f"--prefix '{prefix}' holds a character nginx would misread")
    if not replicas:
        raise ConfError("no replicas: give at least one --replica")
    if len(set(replicas)) != len(replicas):
        raise ConfError("a replica is listed twice: " + ", ".join(replicas))
    if listen in replicas:
        raise ConfError(f"nginx would listen on {listen}, which is also a replica")
    if max_fails < 1:
        raise ConfError("--max-fails must be at least 1")
    for name, value, pattern, kind in (("--fail-timeout", fail_timeout, _TIME, "time"),
                                       ("--read-timeout", read_timeout, _TIME, "time"),
                                       ("--max-body", max_body, _SIZE, "size")):
        if not pattern.match(value):
            raise ConfError(f"{name} '{value}' is not an nginx {kind}")
    servers = "\n".join(
        f"    server {r} max_fails={max_fails} fail_timeout={fail_timeout};" for r in replicas)
    values = {"PREFIX": prefix.rstrip("/") or "/", "LISTEN": listen, "SERVERS": servers,
              "MAX_BODY": max_body, "READ_TIMEOUT": read_timeout, "TRIES": str(len(replicas))}
    return re.sub("@(" + "|".join(values) + ")@", lambda m: values[m.group(1)], template_text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prefix", required=True, help="nginx prefix: conf, pid, logs, temp files")
    p.add_argument("--listen", required=True, help="PORT or HOST:PORT nginx listens on")
    p.add_argument("--replica", action="append", default=[],
                   help="PORT or HOST:PORT of an earnserve replica (repeat)")
    p.add_argument("--max-fails", type=int, default=2)
    p.add_argument("--fail-timeout", default="10s")
    p.add_argument("--read-timeout", default="3600s")
    p.add_argument("--max-body", default="4m", help="client_max_body_size")
    p.add_argument("--output", help="default PREFIX/nginx.conf")
    args = p.parse_args(argv)
    try:
        listen = parse_address(args.listen, "--listen")
        replicas = [parse_address(r, "--replica") for r in args.replica]
        text = render(TEMPLATE.read_text(), args.prefix, listen, replicas, args.max_fails,
                      args.fail_timeout, args.read_timeout, args.max_body)
        prefix = Path(args.prefix)
        for d in ("logs", "tmp"):
            (prefix / d).mkdir(parents=True, exist_ok=True)
        output = Path(args.output) if args.output else prefix / "nginx.conf"
        output.write_text(text)
    except ConfError as e:
        print(f"make_conf: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"make_conf: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
