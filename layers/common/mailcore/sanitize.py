"""HTML of received mail made safe to show, and HTML turned into readable plain text.

`safe_html` is an allow-list sanitizer (nh3, the Rust crate ammonia) tuned for mail:

- Formatting survives: paragraphs, tables, lists, headings, fonts, the old presentational
  attributes mail still uses (align, width, bgcolor, ...).
- Scripting does not: no script or style elements (their content is dropped too), no event
  handler attributes, no forms, frames, objects, embeds, svg or math.
- `style` attributes are dropped, not filtered: CSS can load remote resources (`url(...)`) and
  hide or overlay content, and a correct CSS filter is more than this needs. Mail loses some
  colours and spacing; the text and structure stay. The `background` attribute is not allowed
  for the same reason (a remote image).
- Links keep http, https and mailto URLs only, get `rel="noopener noreferrer"` and
  `target="_blank"`. Relative URLs are removed: a mail has no base to resolve them against.
- Images: remote images (http/https `src`) are blocked, all of them: the `src` is removed and the
  `alt` text stays, so no tracking beacon or remote content is fetched when the mail is shown.
  A client that offers "show remote images" has to fetch the original from the raw mail.
  `cid:` sources (images sent within the mail) are kept, and so are inline `data:` images of
  the raster types png, gif, jpeg and webp; every other `data:` URL (svg, html, ...) is removed.

Bounded for any input (docs/received-mail-limits.md): html5ever, the parser inside nh3, works in
time quadratic in the nesting depth (1 MB of nested `<div>` took 206 s) and in the number of
unclosed formatting elements, so `safe_html` takes at most MAX_HTML_CHARS characters and drops
the start tags nested deeper than MAX_HTML_DEPTH, or beyond MAX_FORMATTING unclosed formatting
elements (their content stays), before nh3 sees the HTML. Mail, sent and received, keeps its full HTML in the raw
message.

`text_from_html` renders HTML as plain text with the stdlib `html.parser`, for clients that show
text only and for the text part of a mail written in HTML.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import nh3

_TAGS = {
    "a", "abbr", "address", "b", "big", "blockquote", "br", "caption", "center", "cite", "code",
    "col", "colgroup", "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp",
    "small", "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th",
    "thead", "tr", "tt", "u", "ul", "var", "wbr",
}  # fmt: skip

# Elements whose content is dropped with them; everything else not allowed loses only its tags.
_DROP_WITH_CONTENT = {
    "script", "style", "title", "template", "svg", "math", "iframe", "object", "select",
    "textarea", "noembed", "noframes",
}  # fmt: skip

_CELL = {"width", "height", "colspan", "rowspan", "bgcolor", "nowrap"}
_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"align", "valign", "dir", "lang", "title"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height", "border", "hspace", "vspace"},
    "table": {"width", "height", "border", "cellpadding", "cellspacing", "bgcolor"},
    "td": _CELL,
    "th": _CELL,
    "tr": {"bgcolor", "height"},
    "thead": {"bgcolor"},
    "tbody": {"bgcolor"},
    "tfoot": {"bgcolor"},
    "col": {"span", "width"},
    "colgroup": {"span", "width"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type"},
    "ul": {"type"},
    "li": {"value", "type"},
    "hr": {"width", "size", "noshade"},
}

# ammonia checks these schemes on href/src first; the filter below narrows them per element.
_URL_SCHEMES = {"http", "https", "mailto", "cid", "data"}
_LINK_URL = re.compile(r"(?:https?|mailto):", re.IGNORECASE)
_INLINE_IMAGE_URL = re.compile(r"(?:cid:|data:image/(?:png|gif|jpeg|webp)[;,])", re.IGNORECASE)
_URL_NOISE = re.compile(r"[\x00-\x20]+")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _filter_attribute(element: str, attribute: str, value: str) -> str | None:
    if attribute == "href":
        return value if _LINK_URL.match(_URL_NOISE.sub("", value)) else None
    if attribute == "src":
        # Only images sent within the mail; http(s) images are remote and blocked.
        return value if element == "img" and _INLINE_IMAGE_URL.match(_URL_NOISE.sub("", value)) else None
    return value


_CLEANER = nh3.Cleaner(
    tags=_TAGS,
    clean_content_tags=_DROP_WITH_CONTENT,
    attributes=_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    strip_comments=True,
    link_rel="noopener noreferrer",
    set_tag_attribute_values={"a": {"target": "_blank"}},
    url_schemes=_URL_SCHEMES,
    url_relative="deny",
)


MAX_HTML_CHARS = 4_000_000
MAX_HTML_DEPTH = 100
MAX_FORMATTING = 8
_FORMATTING = {
    "a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong", "tt", "u",
}  # fmt: skip
# Every "<" and a letter counts as a tag, ending at ">" or before the next "<": one pass whatever
# the input (a pattern that looks for the ">" of each "<" is quadratic on "<a<a<a...").
_TAG = re.compile(r"<(/?)([A-Za-z][^\s/<>]*)[^<>]*(?:>|(?=<)|$)")
_VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param",
    "source", "track", "wbr",
}  # fmt: skip


def _shallow(html: str) -> str:
    """`html` without the start tags that would open more than MAX_HTML_DEPTH elements, or keep
    more than MAX_FORMATTING formatting elements (b, i, font, ...) unclosed.

    One pass over the tags with a stack of open names, as a parser would keep it: an end tag
    closes up to its name when that name is open (else it is a stray the parser ignores too).
    Formatting elements are counted until their own end tag: a parser reopens every unclosed one
    in each new block ("reconstructing the active formatting elements"), so thousands of them
    with distinct attributes made html5ever's work and tree quadratic.
    """
    open_names: list[str] = []
    unclosed: dict[str, int] = {}

    def kept(tag: re.Match[str]) -> str:
        name = tag.group(2).lower()
        if tag.group(1):
            if unclosed.get(name):
                unclosed[name] -= 1
            for depth in range(len(open_names) - 1, -1, -1):
                if open_names[depth] == name:
                    del open_names[depth:]
                    break
            return tag.group(0)
        if name in _VOID:
            return tag.group(0)
        formatting = name in _FORMATTING
        if len(open_names) >= MAX_HTML_DEPTH or (formatting and sum(unclosed.values()) >= MAX_FORMATTING):
            return ""
        if formatting:
            unclosed[name] = unclosed.get(name, 0) + 1
        open_names.append(name)
        return tag.group(0)

    return _TAG.sub(kept, html)


def safe_html(html: str) -> str:
    """The HTML of a mail, safe to show in a page: see the module docstring for what is kept."""
    if not html:
        return ""
    html = _shallow(html[:MAX_HTML_CHARS].replace("\x00", ""))
    try:
        return _CLEANER.clean(html)
    except UnicodeEncodeError:  # lone surrogates, which nh3 cannot take
        return _CLEANER.clean(_SURROGATES.sub("\ufffd", html))


# --- HTML to text -------------------------------------------------------------------------------

_PARAGRAPH = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "dl", "address"}
_BLOCK = {
    "div", "center", "tr", "caption", "dt", "dd", "section", "article", "header", "footer", "nav",
    "aside", "main", "figure", "figcaption", "details", "summary", "form", "fieldset", "legend",
    "body", "html", "tbody", "thead", "tfoot",
}  # fmt: skip
_SKIP = {"script", "style", "title", "template", "svg", "math", "iframe", "object", "select", "textarea"}
_MAX_BREAKS = 3  # at most two blank lines in a row
# Zero-width characters and soft hyphens (newsletters pad their preview text with them) go;
# no-break spaces collapse like other spaces.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u034f\u00ad"), None) | {
    0xA0: " ",
    0: None,
}
_SPACES = re.compile(r"[ \t\n\r\f\v]+")
# "<![" starts a marked section for html.parser, which raises on any it does not know.
_BAD_MARKED_SECTION = re.compile(
    r"<!\[(?!(?:cdata|temp|ignore|include|rcdata|if|else|endif)(?![-_.a-z0-9]))", re.IGNORECASE
)


class _TextRenderer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[tuple[int, str]] = []  # (quote depth, text) of finished lines
        self._line: list[str] = []
        self._line_depth = 0
        self._breaks = 0  # line breaks owed before the next text
        self._started = False  # any text written yet (no breaks before the first text)
        self._skip = 0
        self._pre = 0
        self._pre_fresh = False  # just after <pre>: a first newline there is not content
        self._quote = 0
        self._lists: list[list[int]] = []  # per open list: [ordered (0/1), items so far]
        self._links: list[tuple[str, list[str]]] = []  # per open <a>: (href, its text)
        self._cells = 0

    # Output -------------------------------------------------------------------------------

    def _break(self, count: int) -> None:
        if self._started:
            self._breaks = max(self._breaks, count)

    def _at_line_start(self) -> bool:
        return self._breaks > 0 or not self._line

    def _write(self, text: str) -> None:
        if not text:
            return
        if self._breaks:
            previous_depth = self._line_depth
            self.lines.append((previous_depth, "".join(self._line).rstrip()))
            self._line = []
            for _ in range(self._breaks - 1):
                self.lines.append((min(previous_depth, self._quote), ""))
            self._breaks = 0
        if not self._line:
            self._line_depth = self._quote
        self._started = True
        self._line.append(text)
        for _, link_text in self._links:
            link_text.append(text)

    # Parser events ------------------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
            return
        if self._skip:
            return
        if tag == "br":
            if self._started:
                self._breaks = min(self._breaks + 1, _MAX_BREAKS)
        elif tag in _PARAGRAPH:
            self._break(2)
            if tag == "blockquote":
                self._quote += 1
            elif tag == "pre":
                self._pre += 1
                self._pre_fresh = True
        elif tag in ("ul", "ol"):
            self._break(1 if self._lists else 2)
            self._lists.append([1 if tag == "ol" else 0, 0])
        elif tag == "li":
            self._break(1)
            indent = "  " * max(len(self._lists) - 1, 0)
            if self._lists and self._lists[-1][0]:
                self._lists[-1][1] += 1
                self._write(f"{indent}{self._lists[-1][1]}. ")
            else:
                self._write(f"{indent}- ")
        elif tag in _BLOCK:
            self._break(1)
            if tag == "tr":
                self._cells = 0
        elif tag in ("td", "th"):
            if self._cells and not self._at_line_start():
                self._write(" ")
            self._cells += 1
        elif tag == "hr":
            self._break(1)
            self._write("---")
            self._break(1)
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", []))
        elif tag == "img":
            alt = " ".join((dict(attrs).get("alt") or "").translate(_INVISIBLE).split())
            if alt:
                self._write(f"[{alt}]")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(self._skip - 1, 0)
            return
        if self._skip:
            return
        if tag in _PARAGRAPH:
            if tag == "blockquote" and self._quote:
                self._quote -= 1
            elif tag == "pre" and self._pre:
                self._pre -= 1
            self._break(2)
        elif tag in ("ul", "ol"):
            if self._lists:
                self._lists.pop()
            self._break(1 if self._lists else 2)
        elif tag in _BLOCK or tag == "li":
            self._break(1)
        elif tag == "a" and self._links:
            href, text_parts = self._links.pop()
            self._write_link_target(href.strip(), " ".join("".join(text_parts).split()))

    def _write_link_target(self, href: str, text: str) -> None:
        if not _LINK_URL.match(href):
            return
        shown = href[7:] if href[:7].lower() == "mailto:" else href
        if not shown or text in (href, shown):
            return
        self._write(f" ({shown})" if text else shown)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        data = data.translate(_INVISIBLE)
        if self._pre:
            lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            if self._pre_fresh and len(lines) > 1 and not lines[0]:
                lines.pop(0)
            self._pre_fresh = False
            for index, line in enumerate(lines):
                if index and self._started:
                    self._breaks = min(self._breaks + 1, _MAX_BREAKS)
                self._write(line)
            return
        data = _SPACES.sub(" ", data)
        if data.startswith(" ") and (self._at_line_start() or self._line[-1].endswith(" ")):
            data = data[1:]
        self._write(data)

    def text(self) -> str:
        if self._line:
            self.lines.append((self._line_depth, "".join(self._line).rstrip()))
            self._line = []
        rendered = []
        for depth, line in self.lines:
            prefix = ">" * depth
            rendered.append((f"{prefix} {line}" if line else prefix) if prefix else line)
        return "\n".join(rendered).strip("\n")


def text_from_html(html: str) -> str:
    """Readable plain text of an HTML body.

    Block elements start new lines (paragraphs, headings, lists and tables after a blank line),
    `<br>` breaks the line, list items start with "- " (or "1. " in ordered lists), blockquotes are
    quoted with "> ", links read "text (url)" when the text is not the URL itself, images show
    their alt text as "[alt]". Script, style and title content is dropped, entities are decoded,
    whitespace collapses as a browser collapses it (except in `<pre>`), and no more than two blank
    lines follow each other.
    """
    if not html:
        return ""
    renderer = _TextRenderer()
    try:
        renderer.feed(_BAD_MARKED_SECTION.sub("&lt;![", html))
        renderer.close()
    except Exception:  # html.parser gives up on some garbage: keep the text rendered so far
        pass
    return renderer.text()
