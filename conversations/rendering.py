"""Turn message text into HTML that is safe to put into a page.

Assistant replies are hostile input: a model can be steered by whatever it read (prompt
injection) into writing markup meant to run script, fire htmx requests, or load remote images
that leak the conversation through their URL. Two independent layers stand in the way:

1. markdown-it-py with ``html=False`` never passes raw HTML through; it escapes it as text and
   refuses ``javascript:``-style link targets.
2. nh3 (ammonia) then cleans the result against a small allowlist, so a bug or a new feature in
   layer 1 (or in our own render rules) still cannot produce a dangerous tag or attribute.

Pure Python, no ORM: safe to call from a sync service or from a test without a database.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import nh3
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import normalize_newlines
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.texmath import texmath_plugin
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

__all__ = ["pygments_css", "render_markdown", "render_plain", "sanitize_html"]

# Pygments is pure-Python regex work (about 0.5 MB/s for Python source). Above these sizes we
# emit plain escaped text instead, so that one pasted log file, or a reply stuffed with many
# large blocks, still renders promptly. The per-reply budget is what bounds the worst case.
HIGHLIGHT_MAX_BLOCK_CHARS = 20_000
HIGHLIGHT_MAX_TOTAL_CHARS = 100_000

# Only a conservative alphabet reaches the lexer lookup and the data-lang attribute. The info
# string is model-controlled, and although it is escaped anyway, there is no reason to carry
# quotes or angle brackets into an attribute that the UI reads back.
_LANG_RE = re.compile(r"[A-Za-z0-9_+#.-]{1,40}")
_PLAIN_LANG = "text"

_FORMATTER = HtmlFormatter(nowrap=False, cssclass="highlight")
_TEXT_LEXER = TextLexer()

_LIGHT_STYLE = "default"
_DARK_STYLE = "github-dark"
_CSS_SCOPE = ".md .highlight"


def _lexer_for(lang: str) -> Lexer:
    # No guess_lexer(): guessing is slow, wrong on short snippets, and would let a model pick
    # an arbitrary lexer (some have expensive regexes) without naming it.
    if lang == _PLAIN_LANG:
        return _TEXT_LEXER
    try:
        return get_lexer_by_name(lang)
    except ClassNotFound:
        return _TEXT_LEXER


def _render_code(code: str, lang: str, env: dict[str, Any]) -> str:
    """The HTML for one code block: the wrapper the UI hangs its copy button on."""
    used = env.get("highlighted_chars", 0)
    if len(code) > HIGHLIGHT_MAX_BLOCK_CHARS or used + len(code) > HIGHLIGHT_MAX_TOTAL_CHARS:
        body = f"<pre><code>{escapeHtml(code)}</code></pre>"
    else:
        env["highlighted_chars"] = used + len(code)
        body = highlight(code, _lexer_for(lang), _FORMATTER)
    return f'<div class="codeblock" data-lang="{escapeHtml(lang)}">{body}</div>\n'


def _fence(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    # Only the first word of the info string names the language (CommonMark); the rest, which
    # other renderers turn into attributes, is dropped on purpose.
    words = tokens[idx].info.split(maxsplit=1)
    lang = words[0].lower() if words else ""
    if not _LANG_RE.fullmatch(lang):
        lang = _PLAIN_LANG
    return _render_code(tokens[idx].content, lang, env)


def _code_block(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    # Indented code gets the same wrapper so every block has a copy button.
    return _render_code(tokens[idx].content, _PLAIN_LANG, env)


def _image(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    # Never an <img>: loading it would send a request to a model-chosen URL with no click,
    # which is the classic way to exfiltrate a conversation (data in the query string). A
    # link would still be one click away from the same leak, so we keep only the alt text.
    return escapeHtml(self.renderInlineAsText(tokens[idx].children, options, env))


def _strikethrough_open(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    # markdown-it writes <s>; the allowlist speaks of <del>, so emit that instead of widening it.
    return "<del>"


def _strikethrough_close(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    return "</del>"


def _math_inline(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    # Math leaves the server as escaped TeX source in a marked span; static/js/chat.js typesets
    # it with KaTeX (served from static/vendor). Without script it still reads as TeX.
    return f'<span class="math-inline">{escapeHtml(tokens[idx].content)}</span>'


def _math_display_inline(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    # $$…$$ inside a paragraph: displayed, but a <div> may not sit inside a <p>.
    return f'<span class="math-display">{escapeHtml(tokens[idx].content)}</span>'


def _math_block(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]
) -> str:
    return f'<div class="math-display">{escapeHtml(tokens[idx].content.strip())}</div>\n'


def _table_align(state: StateCore) -> None:
    # markdown-it aligns cells with style="text-align:…", but style is never allowed through
    # the sanitizer (it can overlay the page), so turn it into the align attribute.
    for token in state.tokens:
        if token.type in ("th_open", "td_open"):
            style = token.attrs.pop("style", None)
            if isinstance(style, str) and style.startswith("text-align:"):
                token.attrs["align"] = style.removeprefix("text-align:")


def _build_markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    # $…$ and $$…$$, with Pandoc's rules against false positives ("$5 and $10" is not math);
    # \(…\) and \[…\], which many models write, too.
    md.use(
        dollarmath_plugin,
        allow_space=False,
        allow_digits=False,
        double_inline=True,
        allow_labels=False,
    )
    md.use(texmath_plugin, delimiters="brackets")
    md.add_render_rule("math_inline", _math_inline)
    md.add_render_rule("math_inline_double", _math_display_inline)
    md.add_render_rule("math_block", _math_block)
    md.add_render_rule("math_block_eqno", _math_block)
    md.core.ruler.push("table_align", _table_align)
    md.add_render_rule("fence", _fence)
    md.add_render_rule("code_block", _code_block)
    md.add_render_rule("image", _image)
    md.add_render_rule("s_open", _strikethrough_open)
    md.add_render_rule("s_close", _strikethrough_close)
    return md


_MD = _build_markdown()

_ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "code", "pre",
    "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a", "span",
    "div",
}  # fmt: skip

# Classes are allowlisted by value, not just by attribute name: the page's own CSS (utility
# classes, "hidden", modal overlays) would otherwise be reachable through any HTML that reaches
# sanitize_html. Pygments emits only short token classes from STANDARD_TYPES.
_CODE_CLASSES = {"codeblock", "highlight", *(c for c in STANDARD_TYPES.values() if c)}
# The two math markers the page's script looks for (the TeX inside is plain escaped text).
_MATH_CLASSES = {"math-inline", "math-display"}
_CLEANER = nh3.Cleaner(
    tags=_ALLOWED_TAGS,
    clean_content_tags={"script", "style"},
    attributes={"a": {"href", "title"}, "div": {"data-lang"}},
    allowed_classes={
        "span": _CODE_CLASSES | _MATH_CLASSES,
        "div": _CODE_CLASSES | {"math-display"},
        "code": _CODE_CLASSES,
        "pre": _CODE_CLASSES,
    },
    tag_attribute_values={
        "th": {"align": {"left", "center", "right"}},
        "td": {"align": {"left", "center", "right"}},
    },
    url_schemes={"http", "https", "mailto"},
    # A relative link in a reply points into this application (/logout, /conversations/…),
    # which a model has no business doing; absolute http(s) links are unaffected.
    url_relative="deny",
    link_rel="noopener noreferrer nofollow",
    strip_comments=True,
)


def sanitize_html(html: str) -> SafeString:
    """Clean arbitrary HTML against the chat allowlist; the result is safe to mark safe."""
    return mark_safe(_CLEANER.clean(html))


def render_markdown(text: str) -> SafeString:
    """Render an assistant reply (Markdown) to sanitized HTML.

    Call it once when the reply is stored, not per page view: highlighting costs real time.
    """
    return sanitize_html(_MD.render(text, {}))


def render_plain(text: str) -> SafeString:
    """Render a user message: escaped text, line breaks kept as <br> (like linebreaksbr)."""
    # Same steps as django.template.defaultfilters.linebreaksbr, without importing the template
    # engine; escape() always escapes, even text that is already marked safe.
    return mark_safe(escape(normalize_newlines(text)).replace("\n", "<br>"))


def pygments_css() -> str:
    """The stylesheet for highlighted code, light by default and dark on request.

    Regenerate with ``python -m conversations.rendering > static/css/pygments.css``.
    """
    light = HtmlFormatter(style=_LIGHT_STYLE, cssclass="highlight")
    dark = HtmlFormatter(style=_DARK_STYLE, cssclass="highlight")

    def rules(formatter: HtmlFormatter, scope: str) -> str:
        # Background and token rules only: get_style_defs() would add unscoped "pre" and
        # line-number rules that restyle the whole page.
        return "\n".join(
            formatter.get_background_style_defs(scope) + formatter.get_token_style_defs(scope)
        )

    def dark_rules(scope: str) -> str:
        # Each style only lists the tokens it colours, so a light rule the dark style does not
        # override (a green keyword, a bold name) would leak through. Reset every token span
        # first; the reset is less specific than the dark token rules that follow it.
        reset = (
            f"{scope} span {{ color: inherit; background-color: transparent;"
            " font-weight: inherit; font-style: inherit; text-decoration: none; border: 0 }"
        )
        return reset + "\n" + rules(dark, scope)

    # The explicit theme switch wins in both directions: data-theme="light" on the root element
    # keeps light code on a dark OS, data-theme="dark" forces dark code on a light OS.
    media_scope = f':root:not([data-theme="light"]) {_CSS_SCOPE}'
    switch_scope = f'[data-theme="dark"] {_CSS_SCOPE}'
    media_block = "\n".join("  " + line for line in dark_rules(media_scope).splitlines())
    return (
        "/* Generated by conversations.rendering.pygments_css(); do not edit by hand. */\n"
        f"/* light: pygments style {_LIGHT_STYLE!r}; dark: {_DARK_STYLE!r} */\n"
        f"{rules(light, _CSS_SCOPE)}\n\n"
        f"@media (prefers-color-scheme: dark) {{\n{media_block}\n}}\n\n"
        f"{dark_rules(switch_scope)}\n"
    )


if __name__ == "__main__":
    print(pygments_css(), end="")
