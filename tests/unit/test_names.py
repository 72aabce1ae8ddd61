"""Workflow names: 100 bits of hash, always a name the API server and Argo accept.

Properties over arbitrary rule names, generateName prefixes and idempotency keys; the
prefix rules are checked where a user writes them (the rule file), with file:line:column.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trigger.errors import RuleError
from trigger.rules.loader import load_rules
from trigger.rules.model import DNS1123_SUBDOMAIN, GENERATE_NAME_MAX
from trigger.rules.render import HASH_LENGTH, MAX_ALTERNATES, name_hash

RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {{name: "{name}"}}
spec:
  source: {{kafka: {{topics: [orders]}}}}
  workflow: {{template: t{prefix}}}
"""
HASH = re.compile(rf"[a-z2-7]{{{HASH_LENGTH}}}")
rule_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
keys = st.text(max_size=300)
# Prefixes a user may write: the DNS-1123 characters in any order, up to the limit.
prefixes = st.text(alphabet="abcz09-.", min_size=1, max_size=GENERATE_NAME_MAX + 3)


def load(write: Callable[..., Path], name: str, prefix: str | None = None) -> RuleError | object:
    extra = "" if prefix is None else f', generateName: "{prefix}"'
    try:
        return load_rules([write(RULE.format(name=name, prefix=extra))]).by_name[name]
    except RuleError as exc:
        return exc


def valid_name(name: str) -> bool:
    return len(name) <= 63 and bool(DNS1123_SUBDOMAIN.match(name))


@given(rule=rule_names, key=keys, attempt=st.integers(0, MAX_ALTERNATES))
def test_the_hash_is_twenty_base32_characters(rule: str, key: str, attempt: int) -> None:
    """Every hash is 20 characters of a-z and 2-7: 100 bits."""
    assert HASH.fullmatch(name_hash(rule, key, attempt))


@given(rule=rule_names, key=keys, attempt=st.integers(0, MAX_ALTERNATES))
def test_the_hash_is_the_first_100_bits_of_sha256_in_base32(
    rule: str, key: str, attempt: int
) -> None:
    """The hash is the lower-case base32 of SHA-256's first 100 bits, as names always were."""
    text = f"{rule}\0{key}" if attempt == 0 else f"{rule}\0{key}\0{attempt}"
    digest = hashlib.sha256(text.encode()).digest()
    assert name_hash(rule, key, attempt) == base64.b32encode(digest).decode()[:20].lower()


@given(rule=rule_names, key=keys)
def test_alternates_differ_from_the_name_and_each_other(rule: str, key: str) -> None:
    """The names tried after a collision are all different."""
    names = {name_hash(rule, key, n) for n in range(MAX_ALTERNATES + 1)}
    assert len(names) == MAX_ALTERNATES + 1


# The fixture only writes the one rule file, which each example overwrites.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rule=rule_names, prefix=st.none() | prefixes, key=keys)
def test_a_loaded_rule_only_ever_makes_valid_names(
    write_rules: Callable[..., Path], rule: str, prefix: str | None, key: str
) -> None:
    """A rule that loads gives names of at most 63 characters that are DNS-1123
    subdomains, whatever its name, prefix and key; one that cannot is refused at load."""
    loaded = load(write_rules, rule, prefix)
    if isinstance(loaded, RuleError):
        assert prefix is not None
        assert not valid_name(f"{prefix}{'a' * HASH_LENGTH}") or len(prefix) > GENERATE_NAME_MAX
        return
    from trigger.rules.render import workflow_name
    from trigger.rules.rule import Rule

    assert isinstance(loaded, Rule)
    for attempt in (0, MAX_ALTERNATES):
        assert valid_name(workflow_name(loaded, key, attempt))


@pytest.mark.parametrize(
    "prefix", ["ingest..csv.-", "-ingest", ".ingest", "in.-x", "in-.x", "a" * 44]
)
def test_prefixes_the_api_server_refuses_are_rule_errors(
    write_rules: Callable[..., Path], prefix: str
) -> None:
    """generateName values that would make invalid names are refused with their place."""
    loaded = load(write_rules, "orders", prefix)
    assert isinstance(loaded, RuleError)
    (problem,) = loaded.problems
    assert (problem.rule, problem.line) == ("orders", 6)
    assert "generateName" in problem.message


def test_a_long_rule_name_gets_a_prefix_that_fits(write_rules: Callable[..., Path]) -> None:
    """A 63-character rule name gives a 43-character default prefix ending in '-'."""
    loaded = load(write_rules, "r" * 60 + "-ab")
    from trigger.rules.rule import Rule

    assert isinstance(loaded, Rule)
    assert loaded.generate_name == "r" * 42 + "-"
