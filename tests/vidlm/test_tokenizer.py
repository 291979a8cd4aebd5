"""Tokenizer, chat template and streaming decoder against the pinned reference (transformers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jinja2
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import CHAT_TEMPLATE, build_tokenizer  # noqa: E402

from vidlm.tokenizer import Tokenizer, find_chat_template  # noqa: E402

pytest.importorskip("transformers")

TEXTS = [
    "Hello, world! It's 3:45pm.",
    "  leading spaces\tand\ttabs\n\nnew lines  ",
    "héllo wörld — naïve café, 中文字幕, 日本語, 한국어, emoji 🎬🎥👍🏽 and e\u0301",
    "<|im_start|>user\nWhat happens at <12.5 seconds>?<|im_end|>\n<|im_start|>assistant\n",
    "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>text<|video_pad|>",
    "",
]

# A template that uses what the reference renderer provides beyond plain jinja: tools + tojson,
# raise_exception, namespace, loopcontrols, the generation tag, and trim/lstrip whitespace rules.
TOOL_TEMPLATE = """{% set ns = namespace(turns=0) %}
{% if tools %}
<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}
# Tools

<tools>
    {% for tool in tools %}
{{ tool | tojson }}
    {% endfor %}
</tools><|im_end|>
{% elif messages[0].role == 'system' %}
<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{% for message in messages %}
    {% if message.role not in ['system', 'user', 'assistant', 'tool'] %}
{{ raise_exception('Unknown role: ' + message.role) }}
    {% endif %}
    {% if message.role == 'system' %}{% continue %}{% endif %}
    {% set ns.turns = ns.turns + 1 %}
<|im_start|>{{ message.role }}
    {% if message.role == 'assistant' %}
{% generation %}{{ message.content }}{% endgeneration %}
        {% for call in message.tool_calls | default([]) %}
<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>
        {% endfor %}
    {% elif message.role == 'tool' %}
<tool_response>
{{ message.content | tojson(indent=2) }}
</tool_response>
    {% else %}
{{ message.content }}
    {% endif %}
<|im_end|>
{% endfor %}
{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}{{ '' if ns.turns else raise_exception('no turns') }}"""

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "seek",
            "description": 'Jump to a time in the video <fast> & "exact"',
            "parameters": {
                "type": "object",
                "properties": {"seconds": {"type": "number", "description": "time, é"}},
                "required": ["seconds"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tok")
    hf = build_tokenizer(folder)
    return hf, Tokenizer.from_dir(folder), folder


def _hf_render(hf, messages, **kw):
    return hf.apply_chat_template(messages, tokenize=False, **kw)


# ------------------------------------------------------------------------- encode / decode
@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_reference(tiny, text):
    hf, ours, _ = tiny
    assert ours.encode(text) == hf(text)["input_ids"]


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("text", TEXTS)
def test_decode_matches_reference(tiny, text, skip):
    hf, ours, _ = tiny
    ids = hf(text)["input_ids"]
    assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)


def test_special_ids_and_sizes(tiny):
    hf, ours, _ = tiny
    assert ours.eos_token_id == hf.eos_token_id
    assert ours.pad_token_id == hf.pad_token_id
    assert ours.vocab_size == len(hf)
    for token in ("<|im_start|>", "<|vision_start|>", "<|image_pad|>", "<|video_pad|>"):
        assert ours.token_to_id(token) == hf.convert_tokens_to_ids(token)
        assert ours.id_to_token(ours.token_to_id(token)) == token
    assert ours.all_special_ids == frozenset(hf.all_special_ids)


def test_token_to_id_unknown_names_the_token(tiny):
    _, ours, _ = tiny
    with pytest.raises(KeyError, match="<\\|nope\\|>"):
        ours.token_to_id("<|nope|>")


def test_missing_tokenizer_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path)


# ---------------------------------------------------------------------------- chat template
def _conversations():
    import numpy as np

    frames = np.zeros((4, 32, 32, 3), np.uint8)
    image = np.zeros((32, 32, 3), np.uint8)
    return {
        "text": [{"role": "user", "content": "Hi there"}],
        "text_parts": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " you"}],
            }
        ],
        "image": [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}],
            }
        ],
        "video": [
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": frames, "timestamps": [0.0, 0.5, 1.0, 1.5]},
                    {"type": "text", "text": "When does X happen?"},
                ],
            }
        ],
        "multi_turn_system": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "image", "image": image}],
            },
            {"role": "assistant", "content": "Two images.", "tool_calls": None},
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": frames, "timestamps": [0, 1, 2, 3]},
                    {"type": "text", "text": "And this?"},
                    {"type": "image", "image": image},
                ],
            },
        ],
    }


@pytest.mark.parametrize("name", list(_conversations()))
@pytest.mark.parametrize("add_vision_id", [False, True])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_byte_identical(tiny, name, add_vision_id, add_generation_prompt):
    hf, ours, _ = tiny
    messages = _conversations()[name]
    kw = dict(add_generation_prompt=add_generation_prompt, add_vision_id=add_vision_id)
    assert ours.apply_chat_template(messages, **kw) == _hf_render(hf, messages, **kw)


def _tool_conversation():
    return [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "Go to 12 s"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "seek", "arguments": {"seconds": 12, "note": "ü <b>"}},
                }
            ],
        },
        {"role": "tool", "content": {"ok": True, "frame": [1, 2], "text": "naïve & <tag>"}},
    ]


@pytest.mark.parametrize("with_tools", [False, True])
def test_tool_template_byte_identical(tiny, tmp_path, with_tools):
    hf, _, folder = tiny
    hf.chat_template = TOOL_TEMPLATE
    try:
        hf.save_pretrained(tmp_path)
        ours = Tokenizer.from_dir(tmp_path)
        tools = TOOLS if with_tools else None
        expected = _hf_render(hf, _tool_conversation(), tools=tools, add_generation_prompt=True)
        assert ours.apply_chat_template(_tool_conversation(), tools=tools) == expected
        assert '"naïve & <tag>"' in expected  # tojson neither escapes HTML nor non-ASCII
    finally:
        hf.chat_template = CHAT_TEMPLATE


def test_raise_exception_in_template(tiny, tmp_path):
    hf, _, _ = tiny
    (tmp_path / "tokenizer.json").write_bytes((tiny[2] / "tokenizer.json").read_bytes())
    (tmp_path / "chat_template.jinja").write_text(TOOL_TEMPLATE)
    ours = Tokenizer.from_dir(tmp_path)
    with pytest.raises(jinja2.TemplateError, match="Unknown role: narrator"):
        ours.apply_chat_template([{"role": "narrator", "content": "x"}])


def test_sandbox_blocks_unsafe_access(tiny, tmp_path):
    (tmp_path / "tokenizer.json").write_bytes((tiny[2] / "tokenizer.json").read_bytes())
    (tmp_path / "chat_template.jinja").write_text("{{ messages.__class__.__mro__ }}")
    ours = Tokenizer.from_dir(tmp_path)
    with pytest.raises(jinja2.exceptions.SecurityError):
        ours.apply_chat_template([{"role": "user", "content": "x"}])


def _copy_tokenizer_files(src: Path, dst: Path) -> dict:
    dst.mkdir()
    (dst / "tokenizer.json").write_bytes((src / "tokenizer.json").read_bytes())
    return json.loads((src / "tokenizer_config.json").read_text())


@pytest.mark.parametrize("kind", ["jinja", "json", "config_string", "config_list"])
def test_template_discovery(tiny, tmp_path, kind):
    from transformers import AutoTokenizer

    _, _, folder = tiny
    dst = tmp_path / kind
    config = _copy_tokenizer_files(folder, dst)
    if kind == "jinja":
        (dst / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    elif kind == "json":
        (dst / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    elif kind == "config_string":
        config["chat_template"] = CHAT_TEMPLATE
    else:
        config["chat_template"] = [
            {"name": "default", "template": CHAT_TEMPLATE},
            {"name": "tool_use", "template": TOOL_TEMPLATE},
        ]
    (dst / "tokenizer_config.json").write_text(json.dumps(config))
    ours = Tokenizer.from_dir(dst)
    hf = tiny[0]
    messages = _conversations()["multi_turn_system"]
    assert ours.apply_chat_template(messages) == _hf_render(
        hf, messages, add_generation_prompt=True
    )
    if (
        kind != "json"
    ):  # the reference tokenizer itself reads these (chat_template.json is the processor's)
        loaded = AutoTokenizer.from_pretrained(dst)
        assert ours.apply_chat_template(messages) == _hf_render(
            loaded, messages, add_generation_prompt=True
        )
    if kind == "config_list":
        convo = _tool_conversation()
        expected = _hf_render(loaded, convo, tools=TOOLS, add_generation_prompt=True)
        assert expected == _hf_render(
            hf, convo, tools=TOOLS, chat_template=TOOL_TEMPLATE, add_generation_prompt=True
        )
        assert ours.apply_chat_template(convo, tools=TOOLS) == expected
        with pytest.raises(ValueError, match="'nope' not found"):
            ours.apply_chat_template(messages, template_name="nope")


def test_no_template_is_a_clear_error(tiny, tmp_path):
    dst = tmp_path / "bare"
    _copy_tokenizer_files(tiny[2], dst)
    assert find_chat_template(dst) is None
    with pytest.raises(ValueError, match="no chat template"):
        Tokenizer.from_dir(dst).apply_chat_template([{"role": "user", "content": "x"}])


# --------------------------------------------------------------------------------- streaming
STREAM_TEXT = "Zeit: 12,5 s — «café» 中文字幕 🎬🎥👍🏽 done.<|im_end|>"


@pytest.mark.parametrize("skip", [False, True])
def test_stream_decoder_one_token_at_a_time(tiny, skip):
    _, ours, _ = tiny
    ids = ours.encode(STREAM_TEXT)
    stream = ours.stream_decoder(skip_special_tokens=skip)
    pieces = [stream.push(i) for i in ids] + [stream.finish()]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == ours.decode(ids, skip_special_tokens=skip)
    # A multi-byte character spans several byte-level tokens, so some pushes must emit nothing.
    assert sum(piece == "" for piece in pieces) > 5


def test_stream_decoder_chunks_and_incomplete_tail(tiny):
    _, ours, _ = tiny
    ids = ours.encode(STREAM_TEXT)
    stream = ours.stream_decoder()
    pieces = [stream.push(ids[i : i + 3]) for i in range(0, len(ids), 3)] + [stream.finish()]
    assert "".join(pieces) == ours.decode(ids)
    cut = ours.encode("ab🎬")[:-1]  # ends inside the emoji's 4 bytes
    stream = ours.stream_decoder()
    streamed = "".join(stream.push(i) for i in cut)
    assert streamed == "ab"
    assert streamed + stream.finish() == ours.decode(cut)
