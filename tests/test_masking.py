from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lelog._masking import MASK, Masker, decode_sanitize_patterns

PROPERTY = settings(max_examples=200, deadline=None)


def reference_mask(secrets: list[str], patterns: list[str], text: str) -> str:
    """docs/protocol.md#masking spelled out naively: try every part, in listed order, at each position."""
    parts = [p.strip() for s in secrets for p in s.split("\n")]
    parts = [p for p in parts if len(p) >= 2]
    out = []
    i = 0
    while i < len(text):
        for part in parts:
            if text.startswith(part, i):
                out.append(MASK)
                i += len(part)
                break
        else:
            out.append(text[i])
            i += 1
    masked = "".join(out)
    for pattern in patterns:
        masked = re.sub(pattern, MASK, masked)
    return masked


def test_mask_is_fourteen_asterisks() -> None:
    assert MASK == "*" * 14


def test_secret_is_masked_everywhere() -> None:
    masker = Masker(["hunter2"])
    assert masker.mask("pw=hunter2 again hunter2hunter2") == f"pw={MASK} again {MASK}{MASK}"


def test_secret_is_literal_not_regex() -> None:
    masker = Masker(["a.b*c"])
    assert masker.mask("axbbc a.b*c") == f"axbbc {MASK}"


def test_earliest_listed_wins() -> None:
    assert Masker(["abc", "abcdef"]).mask("xabcdefx") == f"x{MASK}defx"
    assert Masker(["abcdef", "abc"]).mask("xabcdefx") == f"x{MASK}x"


def test_matches_do_not_overlap() -> None:
    assert Masker(["abc", "cde"]).mask("abcde") == f"{MASK}de"
    assert Masker(["abab"]).mask("ababab") == f"{MASK}ab"


def test_parts_shorter_than_two_characters_are_skipped() -> None:
    masker = Masker(["a", " b ", "\n", ""])
    assert not masker
    assert masker.mask("a b c") == "a b c"


def test_multi_line_secret_masks_each_stripped_part() -> None:
    masker = Masker(["-----BEGIN KEY-----\r\n  line-two  \nx\n"])
    text = "-----BEGIN KEY----- then line-two and x"
    assert masker.mask(text) == f"{MASK} then {MASK} and x"


def test_patterns_apply_in_order_after_secrets() -> None:
    # The second pattern only matches what the first one produced.
    assert Masker(patterns=["foo", r"\*+bar"]).mask("foobar") == MASK
    assert Masker(patterns=[r"\*+bar", "foo"]).mask("foobar") == f"{MASK}bar"
    # Secrets go first: the pattern no longer sees "token".
    assert Masker(["token123"], [r"token\d"]).mask("token123 token9") == f"{MASK} {MASK}"
    assert Masker(["token123"], ["token"]).mask("token123") == MASK


def test_invalid_pattern_names_the_pattern_and_the_error() -> None:
    with pytest.raises(ValueError, match=r"'\(unclosed'.*missing \)"):
        Masker(patterns=["ok", "(unclosed"])


def test_a_single_str_is_rejected() -> None:
    with pytest.raises(TypeError, match="secrets"):
        Masker("hunter2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="patterns"):
        Masker(patterns="abc")  # type: ignore[arg-type]


def test_bool_and_repr_never_show_secrets() -> None:
    assert not Masker()
    assert Masker(["secret-value"])
    assert Masker(patterns=["x"])
    masker = Masker(["hunter2-value", "other\nthird", "hunter2-value"], ["p"])
    assert repr(masker) == "Masker(secrets=3, patterns=1)"
    assert "hunter2" not in repr(masker) and "hunter2" not in str(masker)


def test_empty_masker_returns_text_unchanged() -> None:
    text = "nothing to hide here\n"
    assert Masker().mask(text) is text


ALPHABET = "ab\n -"
secret_lists = st.lists(st.text(ALPHABET, max_size=5), max_size=4)


@PROPERTY
@given(secrets=secret_lists, text=st.text(ALPHABET, max_size=40))
def test_matches_the_reference_semantics(secrets: list[str], text: str) -> None:
    assert Masker(secrets).mask(text) == reference_mask(secrets, [], text)


@PROPERTY
@given(
    secrets=secret_lists,
    patterns=st.lists(st.sampled_from(["a+", "b-", r"\*a", "a|b", "^-"]), max_size=3),
    text=st.text(ALPHABET + "*", max_size=40),
)
def test_patterns_match_the_reference_semantics(secrets: list[str], patterns: list[str], text: str) -> None:
    assert Masker(secrets, patterns).mask(text) == reference_mask(secrets, patterns, text)


@PROPERTY
@given(
    secrets=st.lists(st.text(st.characters(blacklist_characters="*"), min_size=2), min_size=1),
    pieces=st.lists(st.text(st.characters(blacklist_characters="*")), min_size=1, max_size=5),
    data=st.data(),
)
def test_no_secret_part_survives(secrets: list[str], pieces: list[str], data: st.DataObject) -> None:
    parts = [p.strip() for s in secrets for p in s.split("\n") if len(p.strip()) >= 2]
    glue = data.draw(st.sampled_from(parts)) if parts else ""
    text = glue.join(pieces)
    masked = Masker(secrets).mask(text)
    for part in parts:
        assert part not in masked
    if glue and len(pieces) > 1:
        assert MASK in masked


def encode(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def test_decode_patterns_skips_comments_and_blank_lines() -> None:
    content = encode("# tokens\n\n  ghp_[A-Za-z0-9]{36}  \r\n   # indented comment\nAKIA[0-9A-Z]{16}\n")
    assert decode_sanitize_patterns(content) == ["ghp_[A-Za-z0-9]{36}", "AKIA[0-9A-Z]{16}"]


def test_decode_patterns_accepts_wrapped_base64_and_empty() -> None:
    content = encode("x" * 100 + "\ny")
    wrapped = "\n".join(content[i : i + 76] for i in range(0, len(content), 76)) + "\n"
    assert decode_sanitize_patterns(wrapped) == ["x" * 100, "y"]
    assert decode_sanitize_patterns("") == []


@pytest.mark.parametrize("bad", ["not base64!", "YWJ", "YWJjZA", "ümlaut"])
def test_decode_patterns_rejects_bad_base64(bad: str) -> None:
    with pytest.raises(ValueError, match="not valid base64"):
        decode_sanitize_patterns(bad)


def test_decode_patterns_rejects_non_utf8() -> None:
    with pytest.raises(ValueError, match="not UTF-8"):
        decode_sanitize_patterns(base64.b64encode(b"\xff\xfe\x00").decode("ascii"))


@PROPERTY
@given(
    patterns=st.lists(
        st.text(st.characters(blacklist_categories=["Cs"]), min_size=1)
        .map(str.strip)
        .filter(lambda p: p != "" and not p.startswith("#") and "\n" not in p and "\r" not in p),
        max_size=5,
    ),
    comments=st.lists(st.sampled_from(["", "  ", "# note", "  #x", "\t"]), max_size=5),
)
def test_decode_patterns_round_trip(patterns: list[str], comments: list[str]) -> None:
    mixed: list[str] = []
    for i, pattern in enumerate(patterns):  # a comment or blank before each pattern
        mixed += [*comments[i : i + 1], pattern]
    mixed += comments[len(patterns) :]
    assert decode_sanitize_patterns(encode("\n".join(mixed))) == patterns


# -- credentials and error texts ------------------------------------------------------------------

VISIBLE = "".join(c for c in map(chr, range(0x21, 0x7F)) if c != "*")


def _quotings(token: str) -> list[str]:
    """What lelog's own paths make of a token: repr, JSON, percent-encoding, logfmt."""
    return [
        token,
        repr(token),
        repr(token.encode()),
        json.dumps(token),
        json.dumps(json.dumps(token)),  # the JSON of a token inside a logfmt or JSON string
        json.dumps(repr(token)),
        quote(token, safe=""),
        quote_plus(token, safe=""),
        "".join(c if c not in ' ="\\' else "_" for c in token),  # as a logfmt key
    ]


@PROPERTY
@given(
    token=st.text(VISIBLE, min_size=8, max_size=40),
    around=st.lists(st.text(" é€\t,", max_size=5), min_size=10, max_size=10),
)
def test_no_piece_of_a_credential_survives_in_any_quoted_form(token: str, around: list[str]) -> None:
    masker = Masker(credentials=[token])
    forms = _quotings(token)
    text = "".join(a + f for a, f in zip(around, forms)) + around[-1]
    masked = masker.mask(text)
    pieces = [token[i : i + 8] for i in range(len(token) - 7)]
    assert not [p for p in pieces if p in masked], masked
    assert masker.scrub(ValueError(text)) == masked


def test_a_short_credential_is_masked_only_as_a_whole_word() -> None:
    masker = Masker(credentials=["pw-1"])
    assert masker.mask("pw-1 x=pw-1, pw-12 apw-1") == f"{MASK} x={MASK}, pw-12 apw-1"


def test_credentials_go_before_secrets_so_a_listed_prefix_cannot_split_the_token() -> None:
    token = "abcdefgh-12345678"
    masker = Masker(["abc"], credentials=[token])
    assert masker.mask(f"t={token}") == f"t={MASK}"


def test_scrub_never_raises_on_an_unprintable_error() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert Masker(credentials=["secret-token"]).scrub(Broken()) == "<Broken with an unprintable message>"


@settings(max_examples=200)
@given(
    st.text(max_size=60),
    st.lists(st.text(min_size=1, max_size=8), max_size=3),
    st.lists(st.sampled_from([r"\d{3}", r"k\w+", r"x\n"]), max_size=2),
)
def test_the_line_masker_masks_as_mask_does(text: str, secrets: list[str], patterns: list[str]) -> None:
    masker = Masker(secrets=secrets, patterns=patterns)
    assert masker.line_masker()(text) == masker.mask(text)
