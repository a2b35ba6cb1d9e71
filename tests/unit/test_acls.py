"""The ACLs `provisioning acls apply` grants are exactly the README's table."""

from __future__ import annotations

import re
from pathlib import Path

from provisioning.acls import AclPlan, service_grants
from provisioning.topics import TopicLayout

README = Path(__file__).resolve().parents[2] / "README.md"
ROLES = {"publisher": "publisher", "worker": "worker", "projector": "projector", "API": "api",
         "participant `<name>`": "participant:<name>", "operator": "operator"}


def _readme_rows() -> set[tuple[str, str, str, str, frozenset[str]]]:
    section = README.read_text().split("### Kafka ACLs", 1)[1].split("\n### ", 1)[0]
    rows = set()
    role = None
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] == "principal" or cells[1].startswith("---"):
            continue
        if cells[0]:
            role = ROLES.get(cells[0])  # None: a row that acls apply does not grant
        resource, name, pattern, operations = cells[1:5]
        if role is None or resource == "Cluster":
            continue
        name = name.strip("`").replace("<p>", "")
        rows.add((role, resource, name, pattern,
                  frozenset(op.strip() for op in operations.split(","))))
    return rows


def _granted() -> set[tuple[str, str, str, str, frozenset[str]]]:
    plan = AclPlan(TopicLayout(""), participants=("<name>",), reply_topic_prefix="<reply-prefix>",
                   publisher_reads_outcomes=True)
    return {(g.role, g.resource, g.name, g.pattern, frozenset(g.operations))
            for g in service_grants(plan)}


def test_the_readme_table_lists_exactly_what_acls_apply_grants() -> None:
    readme, granted = _readme_rows(), _granted()

    assert readme, "no ACL rows found in the README"
    assert granted - readme == set(), "granted but not in the README"
    assert readme - granted == set(), "in the README but not granted"


def test_principals_groups_and_prefixes_follow_the_plan() -> None:
    plan = AclPlan(TopicLayout("prod"), participants=("billing",),
                   principals={"worker": "User:svc-w"}, groups={"worker": "w-group"})
    grants = service_grants(plan)
    worker = [g for g in grants if g.role == "worker"]

    assert {g.principal for g in worker} == {"User:svc-w"}
    assert ("TransactionalId", "w-group-", "prefixed") in {
        (g.resource, g.name, g.pattern) for g in worker}
    billing = {(g.resource, g.name) for g in grants if g.role == "participant:billing"}
    assert billing == {("Topic", "prod.provisioning.step-requests.billing"),
                       ("Topic", "prod.provisioning.step-replies"),
                       ("Group", "provisioning-participant-billing")}
    assert not [g for g in grants if g.role == "publisher" and "Read" in g.operations]
    assert all(re.fullmatch(r"[A-Za-z]+", op) for g in grants for op in g.operations)
