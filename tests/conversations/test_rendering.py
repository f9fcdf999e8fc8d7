from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.utils.safestring import SafeString

from conversations.rendering import (
    HIGHLIGHT_MAX_BLOCK_CHARS,
    HIGHLIGHT_MAX_TOTAL_CHARS,
    pygments_css,
    render_markdown,
    render_plain,
    sanitize_html,
)

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "code", "pre",
    "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a", "span",
    "div",
}  # fmt: skip
ALLOWED_ATTRS = {
    "a": {"href", "title", "rel"},
    "span": {"class"},
    "div": {"class", "data-lang"},
    "code": {"class"},
    "pre": {"class"},
    "th": {"align"},
    "td": {"align"},
}
SAFE_SCHEMES = ("http://", "https://", "mailto:")


class Parsed(HTMLParser):
    """What a browser would build from the HTML: elements with their attributes, and text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return "".join(self.chunks).strip()

    def tags(self) -> list[str]:
        return [tag for tag, _ in self.elements]

    def find(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.elements if t == tag]


def assert_inert(html: str) -> Parsed:
    """Only allowlisted elements and attributes, and only safe link targets."""
    parsed = Parsed(html)
    for tag, attrs in parsed.elements:
        assert tag in ALLOWED_TAGS, (tag, html)
        for name, value in attrs.items():
            assert name in ALLOWED_ATTRS.get(tag, set()), (tag, name, html)
            assert not name.startswith(("on", "hx-", "style")), (tag, name)
            if name == "href":
                assert value is not None
                assert value.lower().startswith(SAFE_SCHEMES), value
    return parsed


# -- Markdown features ---------------------------------------------------------------------


def test_returns_safe_string() -> None:
    assert isinstance(render_markdown("hi"), SafeString)


def test_headings() -> None:
    parsed = Parsed(render_markdown("# One\n\n## Two\n\n###### Six"))
    assert parsed.tags() == ["h1", "h2", "h6"]
    assert parsed.text.split() == ["One", "Two", "Six"]


def test_lists() -> None:
    parsed = Parsed(render_markdown("- a\n- b\n\n1. x\n2. y\n"))
    assert parsed.tags() == ["ul", "li", "li", "ol", "li", "li"]


def test_table_alignment_uses_align_not_style() -> None:
    html = render_markdown("| l | c | r |\n|:--|:-:|--:|\n| 1 | 2 | 3 |\n")
    parsed = assert_inert(html)
    assert [a.get("align") for a in parsed.find("th")] == ["left", "center", "right"]
    assert [a.get("align") for a in parsed.find("td")] == ["left", "center", "right"]
    assert {"table", "thead", "tbody", "tr"} <= set(parsed.tags())


def test_emphasis_and_strikethrough() -> None:
    parsed = Parsed(render_markdown("**b** *i* ~~gone~~"))
    assert parsed.tags() == ["p", "strong", "em", "del"]


def test_blockquote_and_rule() -> None:
    parsed = Parsed(render_markdown("> quoted\n\n---\n"))
    assert parsed.tags() == ["blockquote", "p", "hr"]


def test_inline_code_is_escaped() -> None:
    html = render_markdown("use `<b>x</b>` here")
    parsed = Parsed(html)
    assert parsed.tags() == ["p", "code"]
    assert "<b>x</b>" in parsed.text


def test_fenced_code_is_highlighted_and_wrapped() -> None:
    html = render_markdown("```python\ndef f(x):\n    return x\n```\n")
    parsed = assert_inert(html)
    wrapper, inner = parsed.find("div")[:2]
    assert wrapper == {"class": "codeblock", "data-lang": "python"}
    assert inner == {"class": "highlight"}
    classes = {attrs.get("class") for attrs in parsed.find("span")}
    assert {"k", "nf"} <= classes  # keyword, function name
    assert "def f(x):" in parsed.text


def test_info_string_words_after_language_are_ignored() -> None:
    html = render_markdown("```python {onclick=alert(1)} title=x\npass\n```\n")
    parsed = assert_inert(html)
    assert parsed.find("div")[0] == {"class": "codeblock", "data-lang": "python"}


def test_unknown_language_is_plain_text_without_guessing() -> None:
    html = render_markdown("```nosuchlang\ndef f(x):\n    return x\n```\n")
    parsed = assert_inert(html)
    assert parsed.find("div")[0]["data-lang"] == "nosuchlang"
    assert not any(attrs.get("class") for attrs in parsed.find("span"))


def test_fence_without_language_is_plain_text() -> None:
    parsed = assert_inert(render_markdown("```\nimport os\n```\n"))
    assert parsed.find("div")[0]["data-lang"] == "text"
    assert not any(attrs.get("class") for attrs in parsed.find("span"))


def test_indented_code_gets_the_same_wrapper() -> None:
    parsed = assert_inert(render_markdown("para\n\n    <b>code</b>\n"))
    assert parsed.find("div")[0] == {"class": "codeblock", "data-lang": "text"}
    assert "<b>code</b>" in parsed.text


def test_huge_code_block_is_escaped_not_highlighted() -> None:
    line = "x = '<script>alert(1)</script>' & 1\n"
    code = line * (60_000 // len(line) + 1)
    assert len(code) > 60_000
    html = render_markdown(f"```python\n{code}```\n")
    parsed = assert_inert(html)
    assert parsed.tags() == ["div", "pre", "code"]
    assert parsed.find("div")[0] == {"class": "codeblock", "data-lang": "python"}
    assert parsed.text.strip() == code.strip()
    assert "<script" not in html


def test_highlighting_stops_when_the_reply_budget_is_spent() -> None:
    block = "```python\n" + "x = 1\n" * (HIGHLIGHT_MAX_BLOCK_CHARS // 7) + "```\n\n"
    count = HIGHLIGHT_MAX_TOTAL_CHARS // HIGHLIGHT_MAX_BLOCK_CHARS + 2
    parsed = assert_inert(render_markdown(block * count))
    wrappers = [a for a in parsed.find("div") if a.get("class") == "codeblock"]
    assert len(wrappers) == count
    highlighted = [a for a in parsed.find("div") if a.get("class") == "highlight"]
    assert 0 < len(highlighted) < count


# -- Hostile input -------------------------------------------------------------------------

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](  javascript:alert(1) )",
    "[x](java&#115;cript:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](vbscript:msgbox(1))",
    "<javascript:alert(1)>",
    "[x][r]\n\n[r]: javascript:alert(1)",
    '<a hx-get="/x" hx-trigger="load">x</a>',
    '<div hx-post="/conversations/1/delete" hx-trigger="load">x</div>',
    "![tracker](https://evil.example/pixel.png?d=secret)",
    '<iframe src="https://evil.example"></iframe>',
    "<svg onload=alert(1)>",
    "<style>body{display:none}</style>",
    '<p style="position:fixed;inset:0" id="x" data-x="1">overlay</p>',
    '```"><script>alert(1)</script>\ncode\n```',
    '[x](https://example.com "a\\" onmouseover=\\"alert(1)")',
    "[x](https://example.com 'a\" onmouseover=\"alert(1)')",
    "<!-- comment --><b>bold</b>",
    "# <script>alert(1)</script>\n\n| a |\n|---|\n| <img src=x onerror=alert(1)> |",
]


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_input_renders_inert(source: str) -> None:
    html = render_markdown(source)
    parsed = assert_inert(html)
    assert not {"script", "img", "iframe", "svg", "style"} & set(parsed.tags())
    # Belt and braces over the parser: escaped text ("&lt;script") is fine, markup is not.
    for needle in ("<script", "<img", "<iframe", "<svg", "<style", "<!--"):
        assert needle not in html.lower(), needle
    for _, attrs in parsed.elements:
        for value in attrs.values():
            assert "javascript:" not in (value or "").lower()


@pytest.mark.parametrize(
    "source",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "[x](vbscript:msgbox(1))",
    ],
)
def test_dangerous_link_schemes_have_no_href(source: str) -> None:
    parsed = assert_inert(render_markdown(source))
    assert all("href" not in attrs for attrs in parsed.find("a"))


def test_raw_html_is_shown_as_text() -> None:
    parsed = assert_inert(render_markdown('<a hx-get="/x" hx-trigger="load">x</a>'))
    assert parsed.tags() == ["p"]
    assert parsed.text == '<a hx-get="/x" hx-trigger="load">x</a>'


def test_markdown_image_shows_alt_text_only() -> None:
    html = render_markdown("see ![a *chart*](https://evil.example/p.png?d=secret)")
    parsed = assert_inert(html)
    assert parsed.text == "see a chart"
    assert "evil.example" not in html


def test_image_inside_link_keeps_the_link() -> None:
    parsed = assert_inert(render_markdown("[![logo](https://x.example/l.png)](https://ok.example)"))
    assert parsed.find("a") == [
        {"href": "https://ok.example", "rel": "noopener noreferrer nofollow"}
    ]
    assert parsed.text == "logo"


def test_info_string_cannot_inject_attributes() -> None:
    html = render_markdown('```"><script>alert(1)</script>\ncode\n```')
    parsed = assert_inert(html)
    assert parsed.find("div")[0] == {"class": "codeblock", "data-lang": "text"}
    assert "script" not in parsed.tags()


def test_link_title_cannot_inject_attributes() -> None:
    html = render_markdown('[x](https://example.com "a\\" onmouseover=\\"alert(1)")')
    parsed = assert_inert(html)
    (link,) = parsed.find("a")
    assert set(link) == {"href", "title", "rel"}
    assert link["title"] == 'a" onmouseover="alert(1)'


def test_links_get_rel_and_no_target() -> None:
    parsed = assert_inert(render_markdown("[x](https://example.com) <mailto:a@example.com>"))
    assert parsed.find("a") == [
        {"href": "https://example.com", "rel": "noopener noreferrer nofollow"},
        {"href": "mailto:a@example.com", "rel": "noopener noreferrer nofollow"},
    ]


def test_relative_links_lose_href() -> None:
    # A reply has no reason to point into this application (/logout, /conversations/…).
    parsed = assert_inert(render_markdown("[a](/logout) [b](//evil.example) [c](x?y)"))
    assert all("href" not in attrs for attrs in parsed.find("a"))


def test_bare_urls_are_not_linkified() -> None:
    parsed = Parsed(render_markdown("see https://example.com now"))
    assert parsed.find("a") == []


# -- The sanitizer on its own (the second line of defence) --------------------------------


REL = ' rel="noopener noreferrer nofollow"'


def table(cell: str) -> str:
    return f"<table><tbody><tr>{cell}</tr></tbody></table>"


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ("<script>alert(1)</script>ok", "ok"),
        ("<style>p{}</style>ok", "ok"),
        ('<img src="https://evil.example/x.png">ok', "ok"),
        ('<iframe src="https://evil.example"></iframe>ok', "ok"),
        ("<svg onload=alert(1)><p>ok</p></svg>", "<p>ok</p>"),
        ('<p style="color:red" id="x" onclick="alert(1)" data-x="1">ok</p>', "<p>ok</p>"),
        (
            '<div hx-post="/x" hx-trigger="load" data-lang="py">ok</div>',
            '<div data-lang="py">ok</div>',
        ),
        ('<span class="k fixed inset-0">ok</span>', '<span class="k">ok</span>'),
        (table('<td align="right" style="x">a</td>'), table('<td align="right">a</td>')),
        (table('<td align="evil">a</td>'), table("<td>a</td>")),
        ('<a href="javascript:alert(1)">x</a>', f"<a{REL}>x</a>"),
        (
            '<a href="https://e.example" target="_blank">x</a>',
            f'<a href="https://e.example"{REL}>x</a>',
        ),
        ("<!-- hi -->ok", "ok"),
    ],
)
def test_sanitize_html_allowlist(dirty: str, clean: str) -> None:
    result = sanitize_html(dirty)
    assert isinstance(result, SafeString)
    assert result == clean


def test_sanitize_html_keeps_highlighted_code() -> None:
    html = render_markdown("```python\nimport os\n```")
    assert sanitize_html(html) == html


# -- Plain rendering for user messages -----------------------------------------------------


def test_render_plain_escapes_and_keeps_line_breaks() -> None:
    result = render_plain("<b>hi</b> & **no markdown**\r\nline 2\rline 3\n")
    assert isinstance(result, SafeString)
    assert result == ("&lt;b&gt;hi&lt;/b&gt; &amp; **no markdown**<br>line 2<br>line 3<br>")


def test_render_plain_escapes_text_already_marked_safe() -> None:
    assert render_plain(SafeString("<script>")) == "&lt;script&gt;"


# -- Stylesheet ----------------------------------------------------------------------------


def test_pygments_css_is_scoped_and_has_both_themes() -> None:
    css = pygments_css()
    assert "@media (prefers-color-scheme: dark)" in css
    assert '[data-theme="dark"] .md .highlight .k' in css
    rules = [line.strip() for line in css.splitlines() if "{" in line and "@media" not in line]
    assert rules
    scopes = (".md .highlight", ':root:not([data-theme="light"]) .md .highlight',
              '[data-theme="dark"] .md .highlight')  # fmt: skip
    for rule in rules:
        for selector in rule.split("{", 1)[0].split(","):
            assert selector.strip().startswith(scopes), rule


def test_static_stylesheet_is_up_to_date() -> None:
    path = Path(__file__).resolve().parents[2] / "static" / "css" / "pygments.css"
    assert path.read_text() == pygments_css(), "regenerate: python -m conversations.rendering"


# -- Math ----------------------------------------------------------------------------------
# The server leaves math as escaped TeX in a marked element; the page typesets it with KaTeX.


def test_dollar_math_is_marked_for_the_page_to_typeset() -> None:
    html = render_markdown("Euler: $e^{i\\pi}+1=0$.\n\n$$\n\\int_0^1 x\\,dx\n$$\n")
    parsed = assert_inert(html)
    assert parsed.find("span") == [{"class": "math-inline"}]
    assert parsed.find("div") == [{"class": "math-display"}]
    assert "e^{i\\pi}+1=0" in html and "\\int_0^1 x\\,dx" in html


def test_bracket_math_and_inline_display_math() -> None:
    html = render_markdown("Area \\(\\pi r^2\\) and $$x_1$$ here")
    parsed = assert_inert(html)
    assert [a["class"] for a in parsed.find("span")] == ["math-inline", "math-display"]
    # A <div> never ends up inside a <p>.
    assert "div" not in parsed.tags()
    block = assert_inert(render_markdown("Pythagoras:\n\n\\[\na^2 + b^2 = c^2\n\\]\n"))
    assert block.find("div") == [{"class": "math-display"}]


@pytest.mark.parametrize(
    "source",
    [
        "It costs $5 and $10 today.",
        "Between $ 1 $ and $2",
        "Shell: `echo $HOME$PATH`",
        "```\n$x$\n```",
    ],
)
def test_dollars_that_are_not_math_stay_text(source: str) -> None:
    assert "math-" not in render_markdown(source)


@pytest.mark.parametrize(
    "source",
    [
        "$<script>alert(1)</script>$",
        "$$\n</div><img src=x onerror=alert(1)>\n$$",
        '$\\href{javascript:alert(1)}{x}$ and \\(<a href="javascript:alert(2)">y</a>\\)',
        '<span class="math-inline">\\htmlClass{fixed}{x}</span>',
        '$x$<div class="math-display" hx-get="/admin/" hx-trigger="load">y</div>',
    ],
)
def test_hostile_math_renders_inert(source: str) -> None:
    html = render_markdown(source)
    parsed = assert_inert(html)
    assert not {"script", "img", "a"} & set(parsed.tags())
    assert "<script" not in html and "<img" not in html


def test_sanitizer_allows_the_math_classes_only_where_they_belong() -> None:
    assert sanitize_html('<span class="math-inline math-display">x</span>') == (
        '<span class="math-inline math-display">x</span>'
    )
    assert "math" not in sanitize_html('<div class="math-inline">x</div>')
    assert "math" not in sanitize_html('<code class="math-display">x</code>')
    assert "math" not in sanitize_html('<p class="math-display">x</p>')
