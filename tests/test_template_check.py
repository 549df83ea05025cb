"""Which chat templates may be rendered by splicing texts into a skeleton."""

from __future__ import annotations

import pytest

from tests.toy_model import CHATML_TEMPLATE
from tunesmith.data.template_check import inserts_content_verbatim

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
