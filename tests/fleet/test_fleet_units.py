"""The parts of fedlab.fleet that need no running fleet: PKI, run spec, command lines, CLI,
and the ClientApp's import footprint."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from fedlab.fleet.cli import main
from fedlab.fleet.pki import make_certs, make_node_key
from fedlab.fleet.processes import DEVICE_SITE, run_config_arg, superlink_command, supernode_command
from fedlab.fleet.run import FleetRunSpec

pytestmark = pytest.mark.fleet


def test_certs_chain_to_the_ca_and_name_every_host(tmp_path):
    certs = make_certs(tmp_path, hosts=["127.0.0.1", "pi-gw.local"])
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["pi-gw.local"]
    for key in (certs.server_key, tmp_path / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="hosts"):
        make_certs(tmp_path, hosts=[])


def test_node_keys_are_openssh_ec_keys_flower_can_load(tmp_path):
    private, public = make_node_key(tmp_path, "pi-0")
    key = load_ssh_private_key(private.read_bytes(), password=None)
    pub = load_ssh_public_key(public.read_bytes())
    assert key.public_key().public_numbers() == pub.public_numbers()  # type: ignore[union-attr]
    assert key.curve.name == "secp384r1"  # type: ignore[union-attr]
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="plain file name"):
        make_node_key(tmp_path, "../x")


def test_run_spec_round_trips_and_refuses_typos_and_bad_values():
    spec = FleetRunSpec(kit_dir="/k", trusted_key="abc", out_dir="/o", rounds=2)
    assert FleetRunSpec.from_run_config(spec.run_config()) == spec
    with pytest.raises(ValueError, match="unknown run config keys \\['round'\\]"):
        FleetRunSpec.from_run_config({**spec.run_config(), "round": 3})
    with pytest.raises(TypeError, match="rounds"):
        FleetRunSpec(kit_dir="/k", trusted_key="abc", out_dir="/o", rounds="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_nodes"):
        FleetRunSpec(kit_dir="/k", trusted_key="abc", out_dir="/o", min_nodes=9)
    with pytest.raises(ValueError, match="resume needs a checkpoint_dir"):
        FleetRunSpec(kit_dir="/k", trusted_key="abc", out_dir="/o", resume=True)


def test_run_config_text_quotes_strings_as_toml():
    assert run_config_arg({"kit-dir": '/a b/"c"', "rounds": 3, "lr": 0.5, "resume": False}) == (
        'kit-dir="/a b/\\"c\\"" rounds=3 lr=0.5 resume=false'
    )


def test_command_lines_default_to_loopback_and_tls():
    sl = superlink_command(node_auth=False)
    assert "--insecure" in sl and not any("0.0.0.0" in a for a in sl)
    assert sl[sl.index("--fleet-api-address") + 1] == "127.0.0.1:9092"
    # a public Fleet API keeps the plaintext ServerAppIo API on loopback
    public = superlink_command(host="192.168.1.10", node_auth=False)
    assert public[public.index("--serverappio-api-address") + 1] == "127.0.0.1:9091"
    with pytest.raises(ValueError, match="node_auth needs TLS"):
        superlink_command(node_auth=True)
    sn = supernode_command(
        superlink="10.0.0.2:9092", device_config="/d.json", client_id=4, ca_cert="/ca.crt"
    )
    assert sn[sn.index("--clientappio-api-address") + 1] == "127.0.0.1:9094"
    assert sn[sn.index("--node-config") + 1] == 'device-config="/d.json" client-id=4'
    with pytest.raises(ValueError, match="client_id"):
        supernode_command(superlink="h:1", device_config="/d", client_id=-1, ca_cert=None)


def test_cli_prints_commands_and_refuses_missing_tls(tmp_path, capsys):
    assert main(["superlink", "--insecure", "--no-node-auth", "--print"]) == 0
    assert "--fleet-api-address 127.0.0.1:9092" in capsys.readouterr().out
    assert main(["superlink", "--print"]) == 2
    assert main(["superlink", "--certs", str(tmp_path / "none"), "--print"]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["certs", str(tmp_path / "c")]) == 0
    assert main(["superlink", "--certs", str(tmp_path / "c"), "--print"]) == 0
    assert "--enable-supernode-auth" in capsys.readouterr().out


def test_the_clientapp_imports_without_tensorflow():
    # With TensorFlow installed, `import flwr` imports it; a SuperNode started by fedlab
    # has DEVICE_SITE on PYTHONPATH, which blocks it (a board has no TensorFlow at all).
    code = (
        "import sys, fedlab.fleet.clientapp, fedlab.fleet.dispatcher;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    env = dict(os.environ, PYTHONPATH=str(DEVICE_SITE))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
