"""Which chat templates may be rendered by splicing texts into a skeleton: the uses of message
text the check allows and refuses, templates that read text in ways the splice would get wrong
(each rendered in full, and right), and real models' templates, fast exactly when verbatim."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tests.chat_templates import TEMPLATES, Template
from tests.toy_model import CHATML_TEMPLATE
from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.template_check import inserts_content_verbatim

PIECES = ["Hello", "world", " ", "\n", "42", "{{ x }}", "é", "日本", "<b>", "'", "\\", "  pad  "]

LOOP = "{% for m in messages %}BODY{% endfor %}"


@pytest.mark.parametrize(
    "body",
    [
        "{{ m['content'] }}",
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' }}",
        "{{ '<' ~ m.content ~ '>' }}",
        "{% if m.content is string %}{{ m.content }}{% endif %}",
        "{% if m.content %}{{ m.content }}{% endif %}",
        "{% if not m.content %}empty{% else %}{{ m.content }}{% endif %}",
        "{{ m.content if m.content else '' }}",
        # followed through names, keys other than content, and the message list
        "{% set text = '<' + m['content'] %}{{ text ~ '>' }}",
        "{{ (m.content or '') }}",
        "{% if 'name' in m %}{{ m.name }}: {% endif %}{{ m.content }}",
        "{% if m.tool_calls %}{% for c in m.tool_calls %}{{ c.function | tojson }}{% endfor %}"
        "{% endif %}{{ m.content }}",
        "{% if loop.index0 and messages[loop.index0 - 1].role == 'user' %}>{% endif %}"
        "{{ m.content }}",
        "{% if loop.previtem is defined and loop.previtem.role == m.role %}+{% endif %}"
        "{{ m.content }}",
        "{% for u in messages | selectattr('role', 'equalto', 'user') | list %}{{ u.content }}"
        "{% endfor %}{{ messages | length }}{{ (messages | last).content }}",
        "{% set ns = namespace(n=0) %}{% set ns.n = ns.n + 1 %}{{ ns.n }}{{ m.content }}",
        "{% macro header(role) %}<{{ role }}>{% endmacro %}{{ header(m.role) }}{{ m.content }}",
    ],
)
def test_verbatim_uses(body: str) -> None:
    assert inserts_content_verbatim(LOOP.replace("BODY", body))


@pytest.mark.parametrize(
    "body",
    [
        "{{ m['content'] | trim }}",
        "{{ m.content | tojson }}",
        "{{ m.content.split('</think>')[-1] }}",
        "{% set text = m['content'] %}{{ text.split('</think>')[-1] }}",
        "{% if '</think>' in m.content %}x{% endif %}{{ m.content }}",
        "{% if m.content == 'x' %}y{% endif %}{{ m.content }}",
        "{% if m.content is lower %}y{% endif %}{{ m.content }}",
        "{{ m.content[0] }}",
        "{% generation %}{{ m.content }}{% endgeneration %}",  # unknown tag: not parsed
        "{{ m }}",
        "{{ messages[0] | tojson }}{{ m.content }}",
        "{{ m['content'] * 2 }}",
        "{{ m.content ~ m.content[:3] }}",
        "{% for c in m.content %}{{ c }}{% endfor %}",
        "{% for k, v in m | items %}{{ v }}{% endfor %}",
        "{{ m | attr('content') }}",
        "{{ m['__class__'] }}{{ m.content }}",
        "{{ messages | map(attribute='content') | join }}",
        "{{ messages | selectattr('content') | list | length }}{{ m.content }}",
        "{{ raise_exception(m.content) if m.content == 'x' }}{{ m.content }}",
        "{% set parts = [m.content] %}{{ parts | join }}",
        "{% set ns = namespace(t='') %}{% set ns.t = m.content %}{{ ns.t }}",
        "{% set a, b = m.content, 1 %}{{ a }}",
        "{% macro say() %}{{ messages[0].content }}{% endmacro %}{{ say() }}",
        "{% for x in messages recursive %}{{ x.content }}{% endfor %}",
        "{% include 'other.jinja' %}{{ m.content }}",
        "{% block b %}{{ m.content }}{% endblock %}{{ self.b() | length }}",
    ],
)
def test_content_dependent_uses(body: str) -> None:
    assert not inserts_content_verbatim(LOOP.replace("BODY", body))


def test_the_toy_and_smollm2_template_are_spliceable() -> None:
    assert inserts_content_verbatim(CHATML_TEMPLATE)


def test_a_template_that_trims_its_system_prompt_is_not() -> None:
    llama3_style = (
        "{%- if messages[0]['role'] == 'system' %}"
        "{%- set system_message = messages[0]['content']|trim %}"
        "{%- set messages = messages[1:] %}{%- endif %}"
        "{{ system_message }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    assert not inserts_content_verbatim(llama3_style)


# -- adversarial templates: text reached some other way than ``message.content`` ----------------

CHATML_BODY = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}BODY{{ '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Each prints every message's text, but also reads it in a way that changes the output for some
# texts (and not for the splice's placeholders), so splicing would train on the wrong text.
ADVERSARIAL = {
    "get": "{{ m.get('content') | upper }}",
    "or": "{{ (m.content or '') | upper }}",
    "items": "{% for k, v in m.items() %}{% if k == 'content' %}{{ v | upper }}{% endif %}"
    "{% endfor %}",
    "values": "{{ m.values() | list | last | upper }}",
    "dictsort": "{% for k, v in m | dictsort %}{% if k == 'content' %}{{ v | upper }}{% endif %}"
    "{% endfor %}",
    "variable key": "{% set key = 'con' ~ 'tent' %}{{ m[key] | upper }}",
    "tojson": "{% if 'secret' in m | tojson %}[redacted]{% else %}{{ m.content }}{% endif %}",
    "string length": "{% if (m | string) | length > 80 %}(long) {% endif %}{{ m.content }}",
    "length": "{% if m.get('content') | length > 20 %}(long) {% endif %}{{ m.content }}",
    "comparison": "{% set c = m.get('content') %}{% if c == 'ping' %}pong {% endif %}"
    "{{ m.content }}",
    "test": "{% if m.get('content') is upper %}(shouting) {% endif %}{{ m.content }}",
    "slice": "{{ m.content }}{{ m.get('content')[40:] }}",
    "macro": "{% macro say(msg) %}{{ msg.content }}{% endmacro %}{{ say(m) | upper }}",
    "namespace": "{% set ns = namespace(msg=m) %}{% for k in ns.msg %}{% if k == 'content' %}"
    "{{ ns.msg[k] | upper }}{% endif %}{% endfor %}",
    "previtem": "{% if loop.previtem is defined and (loop.previtem | tojson) | length > 90 %}"
    "(after a long one) {% endif %}{{ m.content }}",
    "map": "{% if messages | map(attribute='content') | select('equalto', 'ping') | list %}"
    "(ping seen) {% endif %}{{ m.content }}",
    "set block": "{% set text %}{{ m.content }}{% endset %}{{ text | upper }}",
    "filter block": "{% filter upper %}{{ m.content }}{% endfilter %}",
    "autoescape": "{% autoescape true %}{{ m.content }}{% endautoescape %}",
}
EXPOSING = [
    {"role": "user", "content": "ping"},
    {
        "role": "assistant",
        "content": "the secret <b>plan</b> & a long answer, long enough for every length test",
    },
    {"role": "user", "content": "SHOUT"},
    {"role": "assistant", "content": "pong"},
]
EXPOSING_TRAINED = [False, True, False, True]


def _format(toy_model_dir: Path, template: str) -> ChatFormat:
    tokenizer = AutoTokenizer.from_pretrained(str(toy_model_dir))
    tokenizer.chat_template = template
    return ChatFormat(tokenizer, context_length=256, name="adversarial")


@pytest.mark.parametrize("body", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_text_read_another_way_is_rendered_in_full(body: str, toy_model_dir: Path) -> None:
    template = CHATML_BODY.replace("BODY", body)
    assert not inserts_content_verbatim(template)
    chat_format = _format(toy_model_dir, template)
    full = chat_format._render_full(EXPOSING, EXPOSING_TRAINED, None)
    assert chat_format.render(EXPOSING, EXPOSING_TRAINED) == full
    # Spliced, it would have rendered other text than the template does.
    spliced = _format(toy_model_dir, template)
    spliced._splice = True
    assert spliced.render(EXPOSING, EXPOSING_TRAINED).text != full.text


# -- real templates ------------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES.values(), ids=TEMPLATES.keys())
def test_real_templates_are_spliced_exactly_when_verbatim(
    template: Template, toy_model_dir: Path
) -> None:
    assert inserts_content_verbatim(template.text) is template.verbatim
    chat_format = _format(toy_model_dir, template.text)
    assert chat_format._splice is template.verbatim
    rng = random.Random(template.name)
    for _ in range(40):
        # user/assistant turns, which every one of these templates accepts
        turns = rng.randint(1, 3)
        messages = [
            {"role": role, "content": "".join(rng.choices(PIECES, k=rng.randint(1, 5)))}
            for _ in range(turns)
            for role in ("user", "assistant")
        ]
        trainable = [m["role"] == "assistant" and rng.random() < 0.8 for m in messages]
        if not template.prefix_stable:  # only its last answer can be trained
            trainable = [False] * (len(messages) - 1) + [True]
        fast = chat_format.render(messages, trainable)
        assert fast == chat_format._render_full(messages, trainable, None), messages
    if template.verbatim and template.prefix_stable:  # the fast path was taken
        assert chat_format._skeletons and all(chat_format._skeletons.values())
