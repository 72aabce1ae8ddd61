"""WorkflowTemplate awareness: a watched cache of templates, and the checks rules need.

The modules: `model` (what a template declares, and reading one), `catalog`
(`TemplateCatalog`, the watched cache), `checks` (`check_rules` at load time,
`check_rendered` at submit time, both pure) and `validation` (`locate` for
file:line:column, and `validate_against_cluster` behind `trigger validate --cluster`).
"""

from trigger.submit.templates.catalog import Backoff, TemplateCatalog
from trigger.submit.templates.checks import (
    TEMPLATE_MISSING_GRACE,
    TemplateLookup,
    TemplateMissing,
    TemplateProblem,
    check_rendered,
    check_rule,
    check_rules,
)
from trigger.submit.templates.model import (
    MalformedTemplate,
    TemplateInfo,
    TemplateKey,
    TemplateParameter,
    parse_template,
)
from trigger.submit.templates.validation import locate, validate_against_cluster

__all__ = [
    "TEMPLATE_MISSING_GRACE",
    "Backoff",
    "MalformedTemplate",
    "TemplateCatalog",
    "TemplateInfo",
    "TemplateKey",
    "TemplateLookup",
    "TemplateMissing",
    "TemplateParameter",
    "TemplateProblem",
    "check_rendered",
    "check_rule",
    "check_rules",
    "locate",
    "parse_template",
    "validate_against_cluster",
]
