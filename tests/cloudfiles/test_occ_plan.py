"""The occ plan: only the differences between Nextcloud's facts and the desired state.

Pure functions, no node: what :mod:`deploy.services.nextcloud.occ` plans from given facts
(the shapes ``occ ... --output=json`` prints). The node tests run the same plans against
the Nextcloud stand-in.
"""

from __future__ import annotations

import json

from deploy.services.nextcloud import occ
from deploy.services.nextcloud.data import Account, GroupPolicy, NextcloudData


def policy(group: str, **overrides: object) -> GroupPolicy:
    values = {
        "display_name": group,
        "internal_shares": True,
        "external_links": True,
        "password_required": False,
        "expire_days": 0,
        **overrides,
    }
    return GroupPolicy(group=group, **values)  # type: ignore[arg-type]


def account(uid: str, group: str = "ums-c5", **overrides: object) -> Account:
    values = {"display_name": uid, "quota_mb": 1024, "files": True, "enabled": True, **overrides}
    return Account(uid=uid, group=group, **values)  # type: ignore[arg-type]


def converged_facts(data: NextcloudData, config: dict) -> occ.Facts:
    facts = occ.Facts()
    for a in data.accounts:
        if a.files:
            facts.users[a.uid] = {"enabled": a.enabled, "quota": occ.quota_text(a.quota_mb)}
            facts.groups.setdefault(a.group, []).append(a.uid)
    for g in data.groups:
        facts.groups.setdefault(g.group, [])
    facts.config = {app: dict(values) for app, values in config.items()}
    facts.enabled_apps = set(config)
    return facts


def plan(facts: occ.Facts, data: NextcloudData, config: dict | None = None) -> occ.Plan:
    config = config if config is not None else {"core": occ.share_config(data)}
    return occ.plan(facts, data, app_config=config, apps=list(config), objectstore=None)


def test_a_new_account_is_created_with_password_from_env_group_and_quota() -> None:
    data = NextcloudData([account("a@x.example")], [policy("ums-c5")])
    result = plan(occ.Facts(), data)
    assert ["group:add", "--display-name=ums-c5", "ums-c5"] in result.commands
    add = next(i for i, c in enumerate(result.commands) if c[0] == "user:add")
    assert add in result.with_password
    assert "--password-from-env" in result.commands[add]
    assert "--group=ums-c5" in result.commands[add]
    assert ["user:setting", "a@x.example", "files", "quota", "1024 MB"] in result.commands


def test_converged_facts_plan_nothing() -> None:
    data = NextcloudData([account("a@x.example"), account("b@x.example", files=False)], [])
    config = {"core": occ.share_config(data)}
    assert plan(converged_facts(data, config), data, config).commands == []


def test_quota_flag_and_deletion_are_the_only_differences_applied() -> None:
    data = NextcloudData(
        [account("a@x.example", quota_mb=2048), account("b@x.example", files=False)]
    )
    config = {"core": occ.share_config(data)}
    facts = converged_facts(data, config)
    facts.users["a@x.example"]["quota"] = "1 GB"
    facts.users["b@x.example"] = {"enabled": True, "quota": "1024 MB"}
    facts.groups["ums-c5"].append("b@x.example")
    facts.users["gone@x.example"] = {"enabled": True}
    facts.groups["ums-c5"].append("gone@x.example")
    facts.users["admin"] = {"enabled": True}  # not in a UMS group: never touched
    facts.groups["admin"] = ["admin"]
    result = plan(facts, data, config)
    assert result.commands == [
        ["user:setting", "a@x.example", "files", "quota", "2048 MB"],
        ["user:disable", "b@x.example"],
        ["user:delete", "gone@x.example"],
    ]
    assert result.report["deleted"] == ["gone@x.example"]


def test_share_policy_per_customer_maps_to_group_exclusions() -> None:
    data = NextcloudData(
        [],
        [
            policy("ums-c1"),
            policy("ums-c2", external_links=False, internal_shares=False),
            policy("ums-c3", password_required=True, expire_days=30),
            policy("ums-c4", expire_days=7),
        ],
    )
    config = occ.share_config(data)
    assert config["shareapi_allow_links"] == "yes"
    assert json.loads(config["shareapi_allow_links_exclude_groups"]) == ["ums-c2"]
    assert config["shareapi_exclude_groups"] == "yes"
    assert json.loads(config["shareapi_exclude_groups_list"]) == ["ums-c2"]
    assert config["shareapi_enforce_links_password"] == "yes"
    assert json.loads(config["shareapi_enforce_links_password_excluded_groups"]) == [
        "ums-c1",
        "ums-c2",
        "ums-c4",
    ]
    # Nextcloud has no per-group expiry: the strictest one holds on the instance.
    assert config["shareapi_expire_after_n_days"] == "7"


def test_uids_nextcloud_refuses_are_reported_not_sent() -> None:
    data = NextcloudData([account("o'brien+tag@x.example")])
    result = plan(occ.Facts(), data)
    assert not any(c[0] == "user:add" for c in result.commands)
    assert result.report["skipped"] == ["o'brien+tag@x.example"]


def test_s3_objectstore_is_set_with_typed_values() -> None:
    store = {"class": occ.S3_CLASS, "arguments": {"bucket": "files", "port": 443, "use_ssl": True}}
    result = occ.plan(occ.Facts(), NextcloudData(), app_config={}, apps=[], objectstore=store)
    assert result.commands == [
        ["config:system:set", "objectstore", "class", f"--value={occ.S3_CLASS}"],
        ["config:system:set", "objectstore", "arguments", "bucket", "--value=files",
         "--type=string"],
        ["config:system:set", "objectstore", "arguments", "port", "--value=443",
         "--type=integer"],
        ["config:system:set", "objectstore", "arguments", "use_ssl", "--value=true",
         "--type=boolean"],
    ]  # fmt: skip
    facts = occ.Facts(objectstore=store)
    again = occ.plan(facts, NextcloudData(), app_config={}, apps=[], objectstore=store)
    assert again.commands == []


def test_quota_strings_compare_by_size() -> None:
    assert occ.quota_bytes("1 GB") == occ.quota_bytes("1024 MB") == 1024**3
    assert occ.quota_bytes("none") is None
    assert occ.quota_bytes("lots") == -1


def test_a_uid_occ_would_read_as_an_option_is_not_sent() -> None:
    result = plan(occ.Facts(), NextcloudData([account("-rf@x.example")]))
    assert not any(c[0] == "user:add" for c in result.commands)
    assert result.report["skipped"] == ["-rf@x.example"]


def test_without_cloud_files_data_the_service_touches_nothing() -> None:
    """A state nothing filled (the cloudfiles app absent) must not read as "every account
    is gone": prepare reports and plans nothing, without contacting the node."""
    from deploy.services.base import DesiredState, NodeView
    from deploy.services.nextcloud import SERVICE

    node = NodeView(1, "cloud1", "192.0.2.9", ("cloudfiles",), "debian", 1)
    preparation = SERVICE.prepare(None, DesiredState(node=node))  # type: ignore[arg-type]
    assert preparation is not None and preparation.commands == []
    assert "skipped" in preparation.report
