"""Static analysis of a chat template: does it print each message's text verbatim?

:class:`~tunesmith.data.chat_format.ChatFormat` renders a conversation once per sequence of roles
with placeholder texts and splices the real texts in. That is exact only when the template never
looks *into* a message's content: printing it (alone or concatenated) is fine, and so are type
tests (``is string``) and truthiness (``if message.content``), which give the same answer for any
non-empty string. Anything else — a filter (``| trim``), a method (``.split('</think>')``), a
comparison, ``in``, or assigning it to a variable whose later use cannot be followed — makes the
template content-dependent, and such templates are always rendered in full.

The check walks the parsed Jinja tree, so it sees every access however the variable is named.
"""

from __future__ import annotations

from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Tests whose answer is the same for every non-empty string.
_TYPE_TESTS = frozenset(
    {"string", "defined", "undefined", "none", "mapping", "sequence", "iterable", "number"}
)


def _is_content(node: nodes.Node) -> bool:
    if isinstance(node, nodes.Getattr):
        return node.attr == "content"
    if isinstance(node, nodes.Getitem):
        return isinstance(node.arg, nodes.Const) and node.arg.value == "content"
    return False


def _use_is_verbatim(parents: list[nodes.Node], node: nodes.Node) -> bool:
    """Whether the content access ``node``, under ``parents`` (innermost last), is harmless."""
    child = node
    for parent in reversed(parents):
        if isinstance(parent, nodes.Add | nodes.Concat):
            child = parent  # string concatenation: keep climbing towards the output
            continue
        if isinstance(parent, nodes.Output):
            return True
        if isinstance(parent, nodes.Test):
            return parent.node is child and parent.name in _TYPE_TESTS
        if isinstance(parent, nodes.CondExpr):
            if parent.test is child:
                return True  # truthiness
            child = parent  # `content if … else …`: the value flows on
            continue
        if isinstance(parent, nodes.If):
            return parent.test is child  # truthiness only; a branch body would be an Output
        if isinstance(parent, nodes.Not | nodes.And | nodes.Or):
            return child is node  # truthiness of the content itself
        return False
    return False


def inserts_content_verbatim(template: str) -> bool:
    """True when every use of a message's ``content`` is printing it or testing its type."""
    environment = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])
    try:
        tree = environment.parse(template)
    except TemplateSyntaxError:
        return False  # e.g. custom tags we do not know: stay on the safe, full path

    def visit(node: nodes.Node, parents: list[nodes.Node]) -> bool:
        if _is_content(node) and not _use_is_verbatim(parents, node):
            return False
        parents.append(node)
        try:
            return all(visit(child, parents) for child in node.iter_child_nodes())
        finally:
            parents.pop()

    return visit(tree, [])
