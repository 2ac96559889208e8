"""Deploy targets and enrollment-token lifetimes: one grammar each, bad input refused with nothing stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.errors import BadInput
from hub.names import MAX_TOKEN_TTL_S, Target, parse_target, parse_token_lifetime
from hub.services import HubServices
from tests.unit.enrollment import enroll


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("site=lab,", "empty label after the comma at position 9"),
        ("site=lab, ", "empty label after the comma at position 9"),
        (",site=lab", "empty label before the comma at position 1"),
        ("site=lab,,zone=b", "empty label before the comma at position 10"),
    ],
)
def test_a_stray_comma_in_a_target_is_refused_naming_its_position(text: str, where: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_target(text)
    assert caught.value.message == f"invalid target {text!r}: {where}; expected DEVICE or KEY=VALUE[,KEY=VALUE...]"


def test_targets_that_were_always_good_still_parse() -> None:
    assert parse_target("cam-01") == Target(device="cam-01")
    assert parse_target(" site=lab ") == Target(labels={"site": "lab"})
    assert parse_target("site=lab, zone=b") == Target(labels={"site": "lab", "zone": "b"})
    with pytest.raises(BadInput, match="invalid label 'gpu': expected KEY=VALUE"):
        parse_target("site=lab,gpu")
    with pytest.raises(BadInput, match="a target is required"):
        parse_target("  ")


def _register(hub: HubServices, tmp_path: Path) -> int:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    files = [{"path": "model.onnx", "digest": hub.blobs.put_file(path), "size": 4}]
    return hub.registry.register("digits", files).version


def test_deploy_and_update_refuse_a_trailing_comma_and_store_nothing(hub: HubServices, tmp_path: Path) -> None:
    enroll(hub, "a", ["site=lab"])
    version = _register(hub, tmp_path)
    revision = hub.fleet.standing("a")["desired_revision"]
    with pytest.raises(BadInput, match="empty label after the comma at position 9"):
        hub.deployments.create({"name": "s", "models": [f"digits:{version}"], "target": "site=lab,"})
    assert hub.deployments.list() == []
    assert hub.fleet.standing("a")["desired_revision"] == revision

    hub.deployments.create({"name": "s", "models": [f"digits:{version}"], "target": "site=lab"})
    before = hub.deployments.show("s")
    with pytest.raises(BadInput, match="empty label after the comma"):
        hub.deployments.update("s", {"target": "site=lab,"})
    assert hub.deployments.show("s") == before  # same generation, same target


def test_a_target_stored_with_a_trailing_comma_keeps_selecting_its_devices(hub: HubServices, tmp_path: Path) -> None:
    # Before targets were parsed strictly, `site=lab,` was stored as given; it must not stop selecting.
    enroll(hub, "a", ["site=lab"])
    version = _register(hub, tmp_path)
    hub.deployments.create({"name": "s", "models": [f"digits:{version}"], "target": "site=lab"})
    with hub.db.transaction() as db:
        db.execute("UPDATE services SET target = 'site=lab,' WHERE name = 's'")
    assert [m.name for m in hub.deployments.desired_state("a").services] == ["s"]
    assert hub.fleet.select("site=lab,") == ["a"]


def test_token_lifetime_is_capped_at_30_days() -> None:
    assert parse_token_lifetime("1h") == 3600
    assert parse_token_lifetime("30d") == MAX_TOKEN_TTL_S
    with pytest.raises(BadInput) as caught:
        parse_token_lifetime("99999999d")
    assert caught.value.message == "--expires '99999999d': an enrollment token may live at most 30d (2592000 s)"
    with pytest.raises(BadInput, match="--expires '31d'"):
        parse_token_lifetime("31d")


@pytest.mark.parametrize("ttl_s", [0, -1, MAX_TOKEN_TTL_S + 1, 99999999 * 86400])
def test_the_fleet_refuses_a_token_lifetime_out_of_range_and_registers_nothing(hub: HubServices, ttl_s: int) -> None:
    with pytest.raises(BadInput, match=r"enrollment token lifetime \(expires\) must be 1 s to 30 days"):
        hub.fleet.create_token("cam-01", ["site=lab"], ttl_s)
    assert hub.fleet.list() == []


def test_the_default_and_the_longest_token_lifetimes_are_issued(hub: HubServices) -> None:
    assert hub.fleet.create_token("cam-01", [])["expires"]
    assert hub.fleet.create_token("cam-02", [], MAX_TOKEN_TTL_S)["expires"]
    assert [d["name"] for d in hub.fleet.list()] == ["cam-01", "cam-02"]
