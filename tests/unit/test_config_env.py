"""Environment references in configuration files: `${VAR}`, `${VAR:-default}`, `$$`."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.config import ConfigError, load_config, parse_config
from agentmesh.config_base import expand_environment, expand_string

NODE = """\
node:
  name: node-a
  asn: 65001
  listen: 0.0.0.0:7000
  advertise_address: {advertise}
neighbors:
  - address: {neighbor}
    asn: 65002
    description: {description}
"""


def write(tmp_path: Path, advertise: str, neighbor: str = "127.0.0.1:7001", description: str = "b") -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(NODE.format(advertise=advertise, neighbor=neighbor, description=description), "utf-8")
    return path


def test_a_set_variable_is_expanded_inside_a_value(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "${POD_IP}:7000"), environ={"POD_IP": "10.1.2.3"})
    assert config.node.advertise_address == "10.1.2.3:7000"


def test_the_process_environment_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMESH_TEST_POD_IP", "10.9.8.7")
    assert (
        load_config(write(tmp_path, "${AGENTMESH_TEST_POD_IP}:7000")).node.advertise_address
        == "10.9.8.7:7000"
    )


def test_the_default_applies_when_the_variable_is_unset_or_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "${POD_IP:-127.0.0.5}:7000", neighbor="${PEER:-peers.example}:7001")
    unset = load_config(path, environ={})
    assert unset.node.advertise_address == "127.0.0.5:7000"
    assert unset.neighbors[0].address == "peers.example:7001"  # values in lists too
    assert load_config(path, environ={"POD_IP": ""}).node.advertise_address == "127.0.0.5:7000"
    assert load_config(path, environ={"POD_IP": "10.0.0.1"}).node.advertise_address == "10.0.0.1:7000"


def test_an_unset_variable_is_an_error_located_at_its_value(tmp_path: Path) -> None:
    path = write(tmp_path, "${POD_IP}:7000", description="'${OWNER} and ${TEAM:-ops}'")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value).splitlines() == [
        f"{path}:5: node.advertise_address: environment variable POD_IP is not set"
        " (give a default with ${POD_IP:-default})",
        f"{path}:9: neighbors[0].description: environment variable OWNER is not set"
        " (give a default with ${OWNER:-default})",
    ]


def test_dollar_dollar_is_a_literal_dollar_and_a_lone_dollar_stays() -> None:
    environ = {"X": "x"}
    assert expand_string("$${X} costs $5, $$$$ and ${X}$", environ) == ("${X} costs $5, $$ and x$", [])
    assert expand_string("${X:-a$$b}", {}) == ("a$$b", [])  # a default is taken as written


def test_malformed_references_are_reported() -> None:
    _, unclosed = expand_string("${POD_IP:7000", {})
    assert unclosed == ["'${POD_IP:7000' has no closing '}' (write $$ for a literal $)"]
    _, bad_name = expand_string("${1X} ${A-B}", {})
    assert [problem.split(":")[0] for problem in bad_name] == ["'${1X}'", "'${A-B}'"]


def test_keys_and_non_strings_are_left_alone() -> None:
    data = {"${K}": {"n": 5, "flag": True, "list": ["${V}", None]}}
    expanded, problems = expand_environment(data, {"K": "k", "V": "v"})
    assert expanded == {"${K}": {"n": 5, "flag": True, "list": ["v", None]}}
    assert problems == []


def test_an_expanded_value_stays_a_string(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("node:\n  asn: ${ASN}\n", "utf-8")
    with pytest.raises(ConfigError, match=r"node\.yaml:2: node\.asn: expected an integer, got str '65001'"):
        load_config(path, environ={"ASN": "65001"})


def test_only_files_are_expanded() -> None:
    # Data handed over already parsed (the admin API, tests) is taken literally.
    with pytest.raises(ConfigError, match="advertise_address"):
        parse_config({"node": {"advertise_address": "${POD_IP}:7000"}})
