"""Manifests written by trigger.submit.manifest read back to the same data."""

from __future__ import annotations

import random
import string
from typing import Any

import pytest
import yaml

from trigger.submit.manifest import to_yaml

AMBIGUOUS = [
    "12",
    "true",
    "True",
    "null",
    "Null",
    "~",
    "1e3",
    "0x1F",
    "0o17",
    "0b101",
    "2025-01-01",
    "2025-01-01T00:00:00Z",
    "yes",
    "on",
    "No",
    "OFF",
    "y",
    "n",
    ".inf",
    "-.inf",
    ".nan",
    "1_000",
    "12:30",
    "1:20:30",
    "+1",
    "-1",
    ".5",
    "=",
    "<<",
    "*a",
    "&a",
    "!t",
    "%x",
    "@x",
    "`x",
    "'q'",
    '"dq"',
    ":",
    "a:",
    "a: b",
    "- x",
    "#c",
    "a #c",
    "{a}",
    "[a]",
    "a,b",
    "?",
    "|",
    ">",
    "",
    " lead",
    "trail ",
    "line1\nline2",
    "tab\there",
    "ü",
    "中文",
    "\u0000",
    "\x7f",
    "\\",
    "a\\b",
    "oss://bucket/dir/file.csv",
    "s3://b/k",
    "http://x:80/p?q=1&r=2",
    "refs/heads/main",
    "trigger.dev/rule",
    "sha256:abc",
    "2.5",
    "249.5",
    "-",
    "--",
    "---",
    "...",
    "a b",
    "é=1",
]


@pytest.mark.parametrize("text", AMBIGUOUS)
def test_strings_round_trip(text: str) -> None:
    """A string value and a string key read back as the same string."""
    document = {"value": text, text or "empty": [text], "nested": {"k": text}}
    assert yaml.safe_load(to_yaml(document)) == document


def test_workflow_round_trips() -> None:
    """A realistic Workflow reads back identically, with numbers, booleans and None typed."""
    workflow: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": "ingest-csv-45e6895b13ef",
            "namespace": "data",
            "labels": {"team": "data", "trigger.dev/rule": "ingest-csv"},
            "annotations": {"trigger.dev/event-subject": "acs:oss:cn-hangzhou:1:b/in/a b.csv"},
        },
        "spec": {
            "priority": 10,
            "ratio": 0.5,
            "suspend": False,
            "nothing": None,
            "empty": {},
            "none": [],
            "workflowTemplateRef": {"name": "ingest", "clusterScope": True},
            "arguments": {
                "parameters": [
                    {"name": "input", "value": "oss://b/in/a b.csv"},
                    {"name": "n", "value": "12"},
                ]
            },
            "matrix": [[1, 2], [], ["a"]],
        },
    }
    assert yaml.safe_load(to_yaml(workflow)) == workflow


def test_random_strings_round_trip() -> None:
    """Random printable and unicode strings read back unchanged (fixed seed)."""
    rng = random.Random(7)
    alphabet = string.printable + "äöüß中文😀\u2028"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        document = {"v": text, "l": [text]}
        assert yaml.safe_load(to_yaml(document)) == document, repr(text)


def test_output_is_the_same_once_strings_are_remembered() -> None:
    """The written form of repeated strings is cached (bounded); the text never changes,
    also across the cache filling up and starting over."""
    documents = [{"k": f"v{i}", "same": "yes", "list": [f"x{i}", "12"]} for i in range(9000)]
    first = [to_yaml(d) for d in documents]  # 18,000 distinct strings: the cache restarts
    assert [to_yaml(d) for d in documents] == first
    sample = range(0, len(documents), 97)
    assert all(yaml.safe_load(first[i]) == documents[i] for i in sample)
    assert first[0] == 'k: v0\nsame: "yes"\nlist:\n- x0\n- "12"\n'
