"""Tokenizer, chat template and streaming detokenizer read from a checkpoint folder.

What is unusual here:
- The byte-level BPE itself is ``tokenizers``; this module only adds what a checkpoint's side
  files define: named special tokens (``tokenizer_config.json``), the chat template (found in
  ``chat_template.jinja``, ``chat_template.json`` or ``tokenizer_config.json``, in that order) and
  ids for the vision placeholders.
- The chat template is untrusted code from the checkpoint, so it runs in jinja2's
  ``ImmutableSandboxedEnvironment`` with the same globals, filters and whitespace options as the
  reference renderer (``raise_exception``, a ``tojson`` that does not HTML-escape,
  ``strftime_now``, a ``namespace`` that refuses underscore names, ``dict``). Everything the template
  sees is rebuilt from plain JSON types first, so arrays or images in content parts reach it only
  as an inert ``"<ndarray>"`` style placeholder (templates test for keys, never read media).
- ``StreamDecoder`` never emits half a UTF-8 character: byte-level tokens can split one, and the
  decoded text then ends in U+FFFD until the rest arrives.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as _HFTokenizer

logger = logging.getLogger(__name__)

# Named special-token attributes a tokenizer_config.json may carry; these (and only these) are
# passed to the chat template as variables, the way the reference renderer does.
NAMED_SPECIAL_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
# A message's reasoning may arrive under any of these names; templates read the first.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_REPLACEMENT_CHAR = "\ufffd"

Message = Mapping[str, Any]


class Tokenizer:
    """Byte-level BPE tokenizer plus the checkpoint's special tokens and chat template."""

    def __init__(
        self,
        backend: _HFTokenizer,
        *,
        special_tokens: Mapping[str, str] | None = None,
        chat_template: str | dict[str, str] | None = None,
    ) -> None:
        self._backend = backend
        self.special_tokens_map: dict[str, str] = dict(special_tokens or {})
        self.chat_template = chat_template
        added = backend.get_added_tokens_decoder()  # {id: AddedToken}
        self._special_ids = frozenset(i for i, t in added.items() if t.special)

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load ``tokenizer.json`` (+ ``tokenizer_config.json`` and the chat template) from a folder.

        Raises:
            FileNotFoundError: the folder has no ``tokenizer.json``.
        """
        folder = Path(path)
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise FileNotFoundError(
                f"path={str(folder)!r} has no tokenizer.json; pass a checkpoint folder that holds one"
            )
        backend = _HFTokenizer.from_file(str(tokenizer_file))
        config = _read_json(folder / "tokenizer_config.json") or {}
        special = {
            name: value
            for name in NAMED_SPECIAL_TOKENS
            if (value := _token_content(config.get(name))) is not None
        }
        return cls(
            backend, special_tokens=special, chat_template=find_chat_template(folder, config)
        )

    # ----------------------------------------------------------------------------- token ids
    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (the reference's ``len(tokenizer)``)."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def eos_token_id(self) -> int | None:
        return self._named_id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._named_id("pad_token")

    @property
    def bos_token_id(self) -> int | None:
        return self._named_id("bos_token")

    @property
    def all_special_ids(self) -> frozenset[int]:
        """Ids of the added tokens marked ``special`` (dropped by ``skip_special_tokens``)."""
        return self._special_ids

    def token_to_id(self, token: str) -> int:
        """Id of one token string.

        Raises:
            KeyError: the token is not in the vocabulary.
        """
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise KeyError(f"token={token!r} is not in the vocabulary ({self.vocab_size} tokens)")
        return token_id

    def id_to_token(self, token_id: int) -> str:
        """Token string of one id (byte-level form, e.g. ``Ġ`` for a space).

        Raises:
            KeyError: the id is out of range.
        """
        token = self._backend.id_to_token(int(token_id))
        if token is None:
            raise KeyError(f"token_id={token_id} is outside [0, {self.vocab_size})")
        return token

    def _named_id(self, name: str) -> int | None:
        token = self.special_tokens_map.get(name)
        return None if token is None else self.token_to_id(token)

    # ------------------------------------------------------------------------ encode/decode
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens written in the text are recognised, no BOS added."""
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` for several texts (parallel inside ``tokenizers``)."""
        return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; invalid or incomplete UTF-8 becomes U+FFFD."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def stream_decoder(self, *, skip_special_tokens: bool = False) -> StreamDecoder:
        """A fresh incremental detokenizer over this tokenizer."""
        return StreamDecoder(self, skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------------ chat template
    def get_chat_template(
        self, name: str | None = None, *, tools: Sequence[Any] | None = None
    ) -> str:
        """The template source: the single one, or a named one (default ``"default"``, or
        ``"tool_use"`` when tools are given and the checkpoint has it).

        Raises:
            ValueError: there is no template, or the name is unknown.
        """
        templates = self.chat_template
        if templates is None:
            raise ValueError(
                "this checkpoint has no chat template (looked for chat_template.jinja, "
                "chat_template.json and tokenizer_config.json['chat_template'])"
            )
        if isinstance(templates, str):
            if name is not None:
                raise ValueError(
                    f"name={name!r}, but this checkpoint has a single unnamed chat template"
                )
            return templates
        if name is None:
            name = "tool_use" if tools is not None and "tool_use" in templates else "default"
        if name not in templates:
            raise ValueError(
                f"chat template name={name!r} not found; available: {sorted(templates)}"
            )
        return templates[name]

    def apply_chat_template(
        self,
        messages: Sequence[Message],
        *,
        add_generation_prompt: bool = True,
        add_vision_id: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        template_name: str | None = None,
        **template_vars: Any,
    ) -> str:
        """Render one conversation to the prompt string (the reference's ``tokenize=False`` output).

        Args:
            messages: chat messages ``{"role": ..., "content": str | list[part]}``.
            add_generation_prompt: append the assistant header.
            add_vision_id: prefix ``Picture k: `` / ``Video k: `` to vision placeholders.
            tools: JSON-schema tool descriptions, passed to the template as ``tools``.
            template_name: which named template to use when the checkpoint has several.
            template_vars: extra template variables (e.g. ``enable_thinking``).

        Raises:
            ValueError: empty conversation, no template, or a tool that is not a dict.
            TypeError: a message that is not a mapping.
            jinja2.TemplateError: the template raised (``raise_exception``) or failed.
        """
        if len(messages) == 0:
            raise ValueError("messages is empty; pass at least one message")
        if tools is not None and not all(isinstance(t, Mapping) for t in tools):
            raise ValueError("tools must be JSON-schema dicts (callables are not converted here)")
        template = compile_chat_template(self.get_chat_template(template_name, tools=tools))
        chat = _alias_reasoning_fields(_plain_template_data(_drop_none_values(messages)))
        variables = {
            **self.special_tokens_map,
            "add_vision_id": add_vision_id,
            **template_vars,
        }
        return template.render(
            messages=chat,
            tools=_plain_template_data(None if tools is None else list(tools)),
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **_plain_template_data(variables),
        )


class StreamDecoder:
    """Incremental detokenizer: push ids, get text pieces that are always whole characters.

    The pieces concatenate to ``tokenizer.decode(all_ids)``. A piece is withheld while the decoded
    tail ends in U+FFFD (an incomplete multi-byte character); ``finish()`` flushes what is left,
    even if the ids never completed the character.
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special_tokens: bool = False) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the window decoded together (context for the decoder)
        self._read_offset = 0  # ids before this have been emitted

    @property
    def token_ids(self) -> list[int]:
        return list(self._ids)

    def push(self, token_ids: int | Iterable[int]) -> str:
        """Add one or more ids; return the newly completed text ('' when nothing is complete)."""
        if isinstance(token_ids, (int, np.integer)):
            self._ids.append(int(token_ids))
        else:
            self._ids.extend(int(i) for i in token_ids)
        emitted, new_text = self._window_texts()
        if len(new_text) <= len(emitted) or new_text.endswith(_REPLACEMENT_CHAR):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return new_text[len(emitted) :]

    def finish(self) -> str:
        """Flush the withheld tail (may contain U+FFFD if the ids end inside a character)."""
        if self._read_offset == len(self._ids):
            return ""
        emitted, new_text = self._window_texts()
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(emitted) :]

    def _window_texts(self) -> tuple[str, str]:
        decode = self._tokenizer.decode
        window = self._ids[self._prefix_offset :]
        emitted_count = self._read_offset - self._prefix_offset
        emitted = decode(window[:emitted_count], skip_special_tokens=self._skip)
        return emitted, decode(window, skip_special_tokens=self._skip)


# ------------------------------------------------------------------------------- template I/O
def find_chat_template(
    folder: str | Path, tokenizer_config: Mapping[str, Any] | None = None
) -> str | dict[str, str] | None:
    """The checkpoint's chat template: ``chat_template.jinja``, else ``chat_template.json``,
    else ``tokenizer_config.json["chat_template"]`` (a string or a list of named templates)."""
    folder = Path(folder)
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    for source in (_read_json(folder / "chat_template.json"), tokenizer_config):
        if source and source.get("chat_template") is not None:
            return _named_templates(source["chat_template"])
    return None


def _named_templates(value: Any) -> str | dict[str, str]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(t, Mapping) for t in value):
        return {t["name"]: t["template"] for t in value}
    raise ValueError(
        f"chat_template has type {type(value).__name__}; expected a string or a list of "
        "{'name': ..., 'template': ...} entries"
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _token_content(value: Any) -> str | None:
    """A tokenizer_config special-token entry: a string, an AddedToken dict, or null."""
    if isinstance(value, Mapping):
        return value.get("content")
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------- jinja sandbox
class _GenerationTag(jinja2.ext.Extension):
    """Accept ``{% generation %}...{% endgeneration %}`` (assistant-mask marker) and render its body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Callable[[], str]) -> str:
        return caller()


class _TemplateNamespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses underscore-prefixed attribute names (sandbox hardening)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - same trick as jinja's Namespace
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot store underscore-prefixed names on a namespace, got {name!r}"
            )


class _TemplateDict:
    """``dict(...)`` for templates without exposing the ``dict`` type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # jinja's own tojson HTML-escapes '<', '>', '&' and "'"; prompts need the raw JSON.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


_TEMPLATE_CACHE: dict[str, jinja2.Template] = {}


def compile_chat_template(source: str) -> jinja2.Template:
    """Compile a chat template in the sandbox (cached by source text)."""
    template = _TEMPLATE_CACHE.get(source)
    if template is None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_GenerationTag, jinja2.ext.loopcontrols],
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.globals["dict"] = _TemplateDict()
        env.globals["namespace"] = _TemplateNamespace
        template = env.from_string(source)
        _TEMPLATE_CACHE[source] = template
    return template


# ------------------------------------------------------------------- template input cleanup
def _drop_none_values(messages: Sequence[Message]) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise TypeError(
                f"each message must be a mapping, got {type(message).__name__}: {message!r}"
            )
        out.append({k: v for k, v in message.items() if v is not None})
    return out


def _alias_reasoning_fields(chat: list[Any]) -> list[Any]:
    aliased = []
    for message in chat:
        reasoning = next(
            (message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None
        )
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        aliased.append(message)
    return aliased


def _plain_template_data(value: Any) -> Any:
    """Rebuild ``value`` from JSON types; anything else becomes ``"<TypeName>"``."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):  # subclasses (str enums, numpy strings) lose their extra methods
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain_template_data(k): _plain_template_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_template_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain_template_data(v) for v in value)
    if isinstance(value, np.generic):
        return _plain_template_data(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain_template_data(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if callable(getattr(value, "model_dump", None)):
        return _plain_template_data(value.model_dump())
    return f"<{type(value).__name__}>"
