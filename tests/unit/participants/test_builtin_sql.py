"""Statements compiled once for psycopg: what SQLAlchemy's execution did, done here."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from consumer.participants.builtin.models import Subscription, Tenant
from consumer.participants.builtin.sql import Rows, compiled, insert


def test_an_insert_names_its_columns_as_psycopg_parameters() -> None:
    sql = insert(Tenant, "id", "entity_id", "name", "plan_code", "created_by_key")

    assert sql.text.startswith("INSERT INTO tenants (")
    assert set(re.findall(r"%\((\w+)\)s", sql.text)) == {
        "id", "entity_id", "name", "plan_code", "created_by_key"}
    assert sql.defaults == {}


def test_an_insert_that_leaves_out_a_python_side_default_fails_when_compiled() -> None:
    with pytest.raises(ValueError, match="give the values of id"):
        insert(Tenant, "entity_id", "name", "plan_code")


def test_literals_in_a_statement_are_bound_under_the_callers_values() -> None:
    sql = compiled(sa.select(Subscription.id).where(
        Subscription.tenant_id == sa.bindparam("tenant_id"), Subscription.status == "active"))

    assert "%(tenant_id)s" in sql.text and "%(status_1)s" in sql.text
    assert sql.bind({"tenant_id": "t"}) == {"status_1": "active", "tenant_id": "t"}


def test_rows_answer_as_sqlalchemy_results_do() -> None:
    assert Rows([]).one_or_none() is None
    assert Rows([]).scalar() is None
    assert Rows([("a", 1)]).scalar_one() == "a"
    assert Rows([("a",), ("b",)]).scalars() == ["a", "b"]
    with pytest.raises(LookupError):
        Rows([("a",), ("b",)]).one_or_none()
    with pytest.raises(LookupError):
        Rows([]).one()
