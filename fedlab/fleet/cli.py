"""``fedlab-fleet``: the commands a fleet owner types.

Usage (workbench = the machine running the SuperLink; ``--host`` is the address the boards
reach it at; every default is loopback, Flower's own defaults are 0.0.0.0)::

    fedlab-fleet certs  fleet/certs --host 192.168.1.10 --host workbench.local
    fedlab-fleet keys   fleet/keys pi-0 pi-1 pi-2           # copy pi-N (private) to board N
    fedlab-fleet superlink --certs fleet/certs --host 192.168.1.10 --database fleet/state.db
    fedlab-fleet app    fleet/app --control 127.0.0.1:9093 --ca fleet/certs/ca.crt
    fedlab-fleet register fleet/app fleet/keys/pi-0.pub     # once per board
    fedlab-fleet run    fleet/app kit-dir='"/kits/digits_cnn-raspberry_pi"' rounds=5 …
    fedlab-fleet status fleet/app [--out-dir RUN_OUT]

    # on board N (Python 3.11 venv with the kit's requirements, no TensorFlow):
    fedlab-fleet supernode --superlink 192.168.1.10:9092 --ca ca.crt --key pi-N \\
        --device-config /etc/fedlab/device.json --client-id N

``superlink`` and ``supernode`` replace this process with Flower's (``exec``), so a
service manager sees Flower's exit code; ``--print`` only prints the command line.
``fedlab-superlink`` is ``fedlab-fleet superlink``. Exit codes: 0 ok, 2 usage or
configuration error, 1 a ``flwr`` call failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from fedlab.fleet.pki import ServerCerts, make_certs, make_node_key
from fedlab.fleet.processes import (
    FEDERATION,
    superlink_command,
    supernode_command,
    write_app,
)
from fedlab.log import add_log_level_argument, configure_logging

__all__ = ["main", "superlink_main"]


def _exec(args: list[str], *, dry: bool) -> int:
    if dry:
        return 0
    bin_dir = str(Path(args[0]).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")  # children by name
    os.execv(args[0], args)
    return 1  # pragma: no cover - execv does not return


def _flwr(args: list[str]) -> int:
    exe = str(Path(sys.executable).parent / "flwr")
    env = dict(os.environ, PATH=str(Path(exe).parent) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run([exe, *args], env=env, check=False).returncode


def _certs(folder: str) -> ServerCerts:
    f = Path(folder).resolve()
    certs = ServerCerts(f / "ca.crt", f / "server.pem", f / "server.key")
    missing = [
        str(p) for p in (certs.ca_cert, certs.server_cert, certs.server_key) if not p.is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"--certs {folder}: missing {missing} (make them: fedlab-fleet certs)"
        )
    return certs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedlab-fleet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_log_level_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("certs", help="CA + SuperLink server certificate (TLS)")
    p.add_argument("out")
    p.add_argument(
        "--host", action="append", default=None, help="SAN (repeat); default 127.0.0.1, localhost"
    )
    p.add_argument("--days", type=int, default=365)

    p = sub.add_parser("keys", help="SuperNode auth key pairs (OpenSSH EC P-384)")
    p.add_argument("out")
    p.add_argument("names", nargs="+")

    p = sub.add_parser("superlink", help="start the SuperLink (loopback unless --host)")
    _superlink_args(p)

    p = sub.add_parser("supernode", help="start a device's SuperNode with the fedlab ClientApp")
    p.add_argument("--superlink", default="127.0.0.1:9092", help="Fleet API HOST:PORT")
    p.add_argument("--ca", help="the fleet's ca.crt (omit only with --insecure)")
    p.add_argument("--insecure", action="store_true", help="no TLS (loopback experiments only)")
    p.add_argument("--key", help="this node's private key (fedlab-fleet keys)")
    p.add_argument("--device-config", required=True, help="the agent's device.json")
    p.add_argument("--client-id", type=int, required=True, help="fedlab client id of this device")
    p.add_argument(
        "--clientappio", default="127.0.0.1:9094", help="ClientAppIo API (plaintext: loopback)"
    )
    p.add_argument("--print", action="store_true", dest="dry", help="print the command only")

    p = sub.add_parser("app", help="write the fedlab Flower app folder (for flwr run/ls)")
    p.add_argument("out")
    p.add_argument("--control", default="127.0.0.1:9093", help="the SuperLink's Control API")
    p.add_argument("--ca", help="ca.crt (TLS); omit for an insecure SuperLink")

    p = sub.add_parser("register", help="register a SuperNode public key (node auth)")
    p.add_argument("app")
    p.add_argument("public_key")

    p = sub.add_parser("run", help="start a fedlab run: flwr run APP with run config k=v …")
    p.add_argument("app")
    p.add_argument("config", nargs="*", help="run config, e.g. kit-dir='\"/kits/x\"' rounds=5")

    p = sub.add_parser("status", help="nodes and runs of the SuperLink (+ a run's device state)")
    p.add_argument("app")
    p.add_argument("--out-dir", help="a run's out-dir: its per-device state and rounds")
    return parser


def _superlink_args(p: argparse.ArgumentParser) -> None:
    add_log_level_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address of the Fleet and Control APIs")
    p.add_argument("--certs", help="folder from `fedlab-fleet certs` (TLS)")
    p.add_argument("--insecure", action="store_true", help="no TLS (loopback experiments only)")
    p.add_argument("--no-node-auth", action="store_true", help="accept any SuperNode")
    p.add_argument("--database", help="SQLite state file (survives restarts)")
    p.add_argument("--fleet-port", type=int, default=9092)
    p.add_argument("--serverappio-port", type=int, default=9091)
    p.add_argument("--control-port", type=int, default=9093)
    p.add_argument("--print", action="store_true", dest="dry", help="print the command only")


def _superlink_argv(a: argparse.Namespace) -> list[str]:
    if bool(a.certs) == bool(a.insecure):
        raise ValueError("give --certs DIR (TLS) or --insecure")
    certs = _certs(a.certs) if a.certs else None
    args = superlink_command(
        host=a.host,
        ports={"fleet": a.fleet_port, "serverappio": a.serverappio_port, "control": a.control_port},
        certs=certs,
        node_auth=certs is not None and not a.no_node_auth,
        database=str(Path(a.database).resolve()) if a.database else None,
    )
    return args


def _status_commands(a: argparse.Namespace) -> list[tuple[str, list[str]]]:
    return [
        ("nodes", ["supernode", "ls", a.app, FEDERATION, "--format", "json"]),
        ("runs", ["ls", a.app, FEDERATION, "--format", "json"]),
    ]


def _status_lines(a: argparse.Namespace) -> list[str]:
    """Per-device state and the rounds of a run's output folder (``--out-dir``)."""
    if not a.out_dir:
        return []
    from fedlab.fleet.run import read_run_output

    out = read_run_output(a.out_dir)
    lines = ["== devices", json.dumps(out.get("nodes", {}), indent=2), "== rounds"]
    for r in out.get("history", []):
        lines.append(
            f"round {r['round_index']}: completed {r['completed']} dropped {r['dropped']} "
            f"stragglers {r['stragglers']} failed {r['failed']} "
            f"accuracy {r['test_accuracy']:.3f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fedlab-fleet`` (see the module docstring)."""
    a = _parser().parse_args(argv)
    configure_logging(a.log_level)
    try:
        if a.command == "certs":
            c = make_certs(a.out, hosts=a.host or ("127.0.0.1", "localhost"), days=a.days)
            print(f"CA {c.ca_cert} (copy to every board)\nserver {c.server_cert} {c.server_key}")
        elif a.command == "keys":
            for name in a.names:
                private, public = make_node_key(a.out, name)
                print(f"{name}: private {private} (copy to the board), public {public} (register)")
        elif a.command == "superlink":
            args = _superlink_argv(a)
            print(shlex.join(args), flush=True)
            return _exec(args, dry=a.dry)
        elif a.command == "supernode":
            if bool(a.ca) == bool(a.insecure):
                raise ValueError("give --ca ca.crt (TLS) or --insecure")
            args = supernode_command(
                superlink=a.superlink,
                device_config=str(Path(a.device_config).resolve()),
                client_id=a.client_id,
                ca_cert=str(Path(a.ca).resolve()) if a.ca else None,
                key=str(Path(a.key).resolve()) if a.key else None,
                clientappio=a.clientappio,
            )
            print(shlex.join(args), flush=True)
            return _exec(args, dry=a.dry)
        elif a.command == "app":
            print(write_app(a.out, control_address=a.control, ca_cert=a.ca))
        elif a.command == "register":
            return 1 if _flwr(["supernode", "register", a.public_key, a.app, FEDERATION]) else 0
        elif a.command == "run":
            cmd = ["run", a.app, FEDERATION, "--format", "json"]
            if a.config:
                cmd += ["--run-config", " ".join(a.config)]
            return 1 if _flwr(cmd) else 0
        elif a.command == "status":
            rc = 0
            for title, cmd in _status_commands(a):
                print(f"== {title}", flush=True)
                rc = rc or _flwr(cmd)
            for line in _status_lines(a):
                print(line, flush=True)
            return 1 if rc else 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"fedlab-fleet {a.command}: {exc}", file=sys.stderr)
        return 2
    return 0


def superlink_main(argv: list[str] | None = None) -> int:
    """``fedlab-superlink``: ``fedlab-fleet superlink``."""
    return main(["superlink", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
