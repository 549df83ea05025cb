"""Static analysis of a chat template: does it print each message's text verbatim?

:class:`~tunesmith.data.chat_format.ChatFormat` renders a conversation once per sequence of roles
with placeholder texts and splices the real texts in. That is exact only when nothing the
template prints or decides depends on a message's text, except by printing the text unchanged.
The splice is only used for conversations whose messages hold nothing but a role and a non-empty
string content, so a text's truthiness and type are the same for every conversation of one role
sequence, and so are the keys of a message.

:func:`inserts_content_verbatim` proves that or answers False ("render in full"). It follows, over
the parsed Jinja tree, every value that may hold message text — not only ``message.content`` but
whatever a template reaches it through — with three kinds of taint:

- *messages*: the ``messages`` list, its slices and the lists filtered from it;
- *message*: one message (``messages[i]``, a loop variable over messages, ``loop.previtem``);
- *text*: a message's content, and strings that concatenate it with other text.

Names assigned a tainted value are tainted wherever they are used (the analysis ignores scopes
and control flow, so it can only over-approximate). What is allowed:

- a *text* printed, concatenated (``+``, ``~``), assigned to a name, chosen by ``if``/``else``,
  ``and``/``or``, tested for truth or with a type test (``is string``, ``is defined``);
- a *message*'s ``content`` (by ``.content`` or ``['content']``), any other constant key (absent
  in spliced conversations, so the same for all), key membership (``'name' in message``), truth
  and type tests;
- *messages* indexed by an untainted expression, sliced, iterated, their ``length``, ``first``,
  ``last``, ``reverse``, ``list``, and ``selectattr``/``rejectattr`` on a constant key other than
  ``content``.

Everything else is refused: a filter or method on text (``trim``, ``split``, ``length``), a slice
of it, a comparison or ``in`` involving it; ``.get('content')``, ``.items()``, ``.values()``,
``|dictsort``, ``|tojson``, ``|string``, ``|map``, a key that is not a constant, iterating a
message's content, printing a message; tainted values passed to any call or macro, put in a list
or dict, assigned to a ``namespace`` attribute or unpacked; macros and call blocks that touch
messages at all, filter blocks around message text, ``autoescape``, recursive loops over
messages, blocks (``self.block()`` renders one again), and ``include``/``import``/``extends``
(unseen templates). A tag the parser does not know (such as ``{% generation %}``) also answers
False.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEXT, MESSAGE, MESSAGES, LOOP = "text", "message", "messages", "loop"
Taint = frozenset[str]
CLEAN: Taint = frozenset()

# Tests whose answer is the same for every non-empty string, every message and every list.
_TYPE_TESTS = frozenset(
    {
        "string",
        "defined",
        "undefined",
        "none",
        "mapping",
        "sequence",
        "iterable",
        "number",
        "integer",
        "float",
        "boolean",
        "true",
        "false",
        "callable",
    }
)
# Attribute names that reach a dict's methods (``message.items``) instead of a key.
_DICT_ATTRIBUTES = frozenset(dir(dict))
# Filters on the message list, and what they give.
_LIST_FILTERS: dict[str, Taint] = {
    "length": CLEAN,
    "count": CLEAN,
    "first": frozenset({MESSAGE}),
    "last": frozenset({MESSAGE}),
    "list": frozenset({MESSAGES}),
    "reverse": frozenset({MESSAGES}),
}
_SELECT_FILTERS = frozenset({"selectattr", "rejectattr"})


class _NotVerbatim(Exception):
    """The template may use message text in a way the splice cannot reproduce."""


class _Analysis:
    """One pass over the tree; repeated until the taint of every name is stable."""

    def __init__(self, names: dict[str, Taint], loops_over_messages: bool) -> None:
        self.names = dict(names)
        self.loops_over_messages = loops_over_messages
        self.strict = 0  # inside a macro or call block: nothing may be tainted
        self.transforms = 0  # inside a filter block: no tainted output
        self.captures: list[str] = []  # ``{% set x %}…{% endset %}`` targets, innermost last

    # -- statements ----------------------------------------------------------------------------

    def statements(self, body: list[nodes.Node]) -> None:
        for node in body:
            self.statement(node)

    def statement(self, node: nodes.Node) -> None:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                self.output(self.expr(child))
        elif isinstance(node, nodes.If):
            self.expr(node.test)  # truth of text, a message or the list is fixed
            self.statements(node.body)
            for branch in node.elif_:
                self.statement(branch)
            self.statements(node.else_)
        elif isinstance(node, nodes.For):
            self.for_loop(node)
        elif isinstance(node, nodes.Assign):
            self.assign(node.target, self.expr(node.node))
        elif isinstance(node, nodes.AssignBlock):
            self.assign_block(node)
        elif isinstance(node, nodes.With):
            for target, value in zip(node.targets, node.values, strict=True):
                self.assign(target, self.expr(value))
            self.statements(node.body)
        elif isinstance(node, nodes.Macro | nodes.CallBlock):
            with self.nested("strict"):
                if isinstance(node, nodes.CallBlock):
                    self.expr(node.call)
                for default in node.defaults:
                    self.expr(default)
                self.statements(node.body)
        elif isinstance(node, nodes.FilterBlock):
            self.expr(node.filter)
            with self.nested("transforms"):
                self.statements(node.body)
        elif isinstance(node, nodes.Scope):
            self.statements(node.body)
        elif isinstance(node, nodes.ExprStmt):
            if self.expr(node.node):
                raise _NotVerbatim("an expression statement on message text")
        elif not isinstance(node, nodes.Continue | nodes.Break):
            # include, import, extends, blocks (``self.name()`` renders one again),
            # autoescape and anything newer: not provably verbatim
            raise _NotVerbatim(f"a {type(node).__name__} node")

    def output(self, taint: Taint) -> None:
        if taint - {TEXT}:
            raise _NotVerbatim("a message or the message list printed")
        if taint and self.transforms:
            raise _NotVerbatim("message text inside a filter block")
        for name in self.captures:
            self.taint(name, taint)

    def for_loop(self, node: nodes.For) -> None:
        source = self.expr(node.iter)
        if source and node.recursive:
            raise _NotVerbatim("a recursive loop over messages")
        if TEXT in source or LOOP in source:
            raise _NotVerbatim("a loop over the characters of message text")
        item = CLEAN
        if MESSAGES in source:
            item = frozenset({MESSAGE})
            self.loops_over_messages = True
        # a message's keys: the same for every spliced conversation, so ``item`` stays clean
        if source and not isinstance(node.target, nodes.Name):
            raise _NotVerbatim("messages unpacked in a loop")
        self.assign(node.target, item)
        if node.test is not None:
            self.expr(node.test)
        self.statements(node.body)
        self.statements(node.else_)

    def assign(self, target: nodes.Node, taint: Taint) -> None:
        if isinstance(target, nodes.Name):
            self.taint(target.name, taint)
        elif taint:  # a namespace attribute, or unpacking: not followed
            raise _NotVerbatim("message text assigned to a namespace or unpacked")

    def assign_block(self, node: nodes.AssignBlock) -> None:
        if node.filter is not None:
            self.expr(node.filter)
        if not isinstance(node.target, nodes.Name):
            with self.nested("transforms"):  # any tainted output is refused
                self.statements(node.body)
            return
        with self.nested("transforms" if node.filter is not None else None):
            self.captures.append(node.target.name)
            try:
                self.statements(node.body)
            finally:
                self.captures.pop()

    def taint(self, name: str, taint: Taint) -> None:
        if self.strict and taint:
            raise _NotVerbatim("message text inside a macro")
        self.names[name] = self.names.get(name, CLEAN) | taint

    @contextmanager
    def nested(self, kind: str | None) -> Iterator[None]:
        if kind == "strict":
            self.strict += 1
        elif kind == "transforms":
            self.transforms += 1
        try:
            yield
        finally:
            if kind == "strict":
                self.strict -= 1
            elif kind == "transforms":
                self.transforms -= 1

    # -- expressions ---------------------------------------------------------------------------

    def expr(self, node: nodes.Node) -> Taint:
        taint = self._expr(node)
        if self.strict and taint - {LOOP}:
            raise _NotVerbatim("messages used inside a macro or call block")
        return taint

    def clean(self, *children: nodes.Node | None) -> None:
        for child in children:
            if child is not None and self.expr(child):
                raise _NotVerbatim("message text passed on")

    def _expr(self, node: nodes.Node) -> Taint:
        if isinstance(node, nodes.Const | nodes.TemplateData):
            return CLEAN
        if isinstance(node, nodes.Name):
            taint = self.names.get(node.name, CLEAN)
            return taint | {LOOP} if node.name == "loop" else taint
        if isinstance(node, nodes.Getattr):
            return self.key(self.expr(node.node), node.attr)
        if isinstance(node, nodes.Getitem):
            return self.item(node)
        if isinstance(node, nodes.Filter):
            return self.filter(node)
        if isinstance(node, nodes.Test):
            return self.test(node)
        if isinstance(node, nodes.Compare):
            return self.compare(node)
        if isinstance(node, nodes.And | nodes.Or):
            return self.expr(node.left) | self.expr(node.right)  # truth is fixed; values flow
        if isinstance(node, nodes.Not):
            self.expr(node.node)
            return CLEAN
        if isinstance(node, nodes.CondExpr):
            self.expr(node.test)
            other = CLEAN if node.expr2 is None else self.expr(node.expr2)
            return self.expr(node.expr1) | other
        if isinstance(node, nodes.Add):
            taint = self.expr(node.left) | self.expr(node.right)
            if MESSAGE in taint or LOOP in taint or {TEXT, MESSAGES} <= taint:
                raise _NotVerbatim("a message added to something")
            return taint
        if isinstance(node, nodes.Concat):
            taint = CLEAN
            for child in node.nodes:
                taint |= self.expr(child)
            if taint - {TEXT}:
                raise _NotVerbatim("a message joined into text")
            return taint
        if isinstance(node, nodes.BinExpr):  # - * / // % **: never verbatim
            self.clean(node.left, node.right)
            return CLEAN
        if isinstance(node, nodes.UnaryExpr):  # - +
            self.clean(node.node)
            return CLEAN
        if isinstance(node, nodes.Tuple | nodes.List):
            self.clean(*node.items)
            return CLEAN
        if isinstance(node, nodes.Dict):
            for pair in node.items:
                self.clean(pair.key, pair.value)
            return CLEAN
        if isinstance(node, nodes.Call):
            return self.call(node)
        if isinstance(node, nodes.Slice):
            self.clean(node.start, node.stop, node.step)
            return CLEAN
        if isinstance(node, nodes.MarkSafe | nodes.MarkSafeIfAutoescape):
            return self.expr(node.expr)
        raise _NotVerbatim(f"a {type(node).__name__} expression")

    def key(self, taint: Taint, key: str) -> Taint:
        """``value.key`` or ``value['key']`` with a constant key."""
        result = CLEAN
        for kind in taint:
            if kind == MESSAGE:
                if key in _DICT_ATTRIBUTES or key.startswith("_"):
                    raise _NotVerbatim(f"a message's {key!r} method")
                if key == "content":
                    result |= {TEXT}
            elif kind == LOOP:
                if key in ("previtem", "nextitem") and self.loops_over_messages:
                    result |= {MESSAGE}
            else:  # text methods (split, strip, …) and list attributes
                raise _NotVerbatim(f"{key!r} of message text or the message list")
        return result

    def item(self, node: nodes.Getitem) -> Taint:
        taint = self.expr(node.node)
        if not taint:
            self.clean(node.arg)
            return CLEAN
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            if MESSAGES in taint:
                raise _NotVerbatim("the message list indexed by a string")
            return self.key(taint, node.arg.value)
        self.clean(node.arg)
        if taint != {MESSAGES}:
            raise _NotVerbatim("a message or its text indexed by a computed key or sliced")
        return frozenset({MESSAGES if isinstance(node.arg, nodes.Slice) else MESSAGE})

    def filter(self, node: nodes.Filter) -> Taint:
        self.call_arguments(node)
        if node.node is None:  # the filter of a filter block
            return CLEAN
        taint = self.expr(node.node)
        if not taint:
            return CLEAN
        if taint == {MESSAGES}:
            if node.name in _LIST_FILTERS:
                return _LIST_FILTERS[node.name]
            if node.name in _SELECT_FILTERS and self.selects_a_constant_key(node):
                return taint
        raise _NotVerbatim(f"the filter {node.name!r} on message text or messages")

    @staticmethod
    def selects_a_constant_key(node: nodes.Filter) -> bool:
        if not node.args:
            return not node.kwargs and node.dyn_args is None and node.dyn_kwargs is None
        first = node.args[0]
        return (
            isinstance(first, nodes.Const)
            and isinstance(first.value, str)
            and first.value.split(".")[0] != "content"
            and first.value.split(".")[0] not in _DICT_ATTRIBUTES
        )

    def test(self, node: nodes.Test) -> Taint:
        self.call_arguments(node)
        taint = self.expr(node.node)
        if taint and (node.name not in _TYPE_TESTS or node.args or node.kwargs):
            raise _NotVerbatim(f"the test {node.name!r} on message text or messages")
        return CLEAN

    def compare(self, node: nodes.Compare) -> Taint:
        left = self.expr(node.expr)
        rights = [self.expr(operand.expr) for operand in node.ops]
        if not left and not any(rights):
            return CLEAN
        if (
            len(node.ops) == 1
            and node.ops[0].op in ("in", "notin")
            and not left
            and rights[0] == {MESSAGE}
        ):
            return CLEAN  # key membership: the same keys in every spliced conversation
        raise _NotVerbatim("message text or a message compared")

    def call(self, node: nodes.Call) -> Taint:
        callee = self.expr(node.node)
        if callee:
            raise _NotVerbatim("a call on message text or a message")
        self.call_arguments(node)
        return CLEAN

    def call_arguments(self, node: nodes.Call | nodes.Filter | nodes.Test) -> None:
        self.clean(*node.args, node.dyn_args, node.dyn_kwargs)
        for keyword in node.kwargs:
            self.clean(keyword.value)


def inserts_content_verbatim(template: str) -> bool:
    """True when the template provably prints each message's text unchanged and decides
    nothing on it; False when it may not, or when it cannot be analysed."""
    environment = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])
    try:
        tree = environment.parse(template)
    except TemplateSyntaxError:
        return False  # e.g. custom tags we do not know: stay on the safe, full path
    names: dict[str, Taint] = {"messages": frozenset({MESSAGES})}
    loops_over_messages = False
    for _ in range(64):  # each pass can only add taint; a handful of passes reach the fixpoint
        analysis = _Analysis(names, loops_over_messages)
        try:
            analysis.statements(tree.body)
        except _NotVerbatim:
            return False
        if analysis.names == names and analysis.loops_over_messages == loops_over_messages:
            return True
        names, loops_over_messages = analysis.names, analysis.loops_over_messages
    return False
