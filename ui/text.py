"""User-provided text shown as text: never read as markdown or HTML by Streamlit.

Streamlit reads GitHub-flavoured markdown, with its own additions (``:material/icon:``,
``:red[...]``, ``$math$``), in ``st.markdown``, ``st.caption``, alerts, toasts, headings, progress
texts, help tooltips, image captions, and the labels of buttons, link buttons, expanders, tabs,
metrics, widgets and radio options. Text that users or teammates choose (run names, notes,
failure messages, log lines, file names, captions, preset comments, config values quoted in a
message) goes through ``plain`` (or ``code`` for a path or a name shown in monospace) before it
joins such a string: a run named ``![x](http://host/beacon.png)`` shows those characters, and no
browser fetches the image. Select box and multiselect options (``format_func``), ``st.text``,
``st.code``, ``st.json``, tables and dataframes show text as it is: they take it unchanged.
"""

from __future__ import annotations

import re

# CommonMark lets a backslash escape any ASCII punctuation character. Escaped here is each one
# that means something where it stands, and nothing more, so a name like "my_lora_2 (v1.5)" stays
# readable in the markdown source:
# - always: code, emphasis, strikethrough, links and images ("![" needs its "["), HTML tags and
#   autolinks, blockquotes, tables, math, and the backslash itself;
_ALWAYS = frozenset("\\`*[]<>|~$")
# - "_" unless inside a word ("my_lora" is no emphasis); an entity's "&" ("&lt;" would show "<");
#   a ":" before a non-space or around a shortcode (directives ":red[", icons ":material/",
#   emoji ":smile:"; "Error: x" stays);
_ENTITY = re.compile(r"&(?=#\d+;|#[xX][0-9a-fA-F]+;|[A-Za-z][A-Za-z0-9]*;)")
_SHORTCODE = re.compile(r"(?=(:[\w+-]+:))")
_ICON_PREFIXES = (":material", ":streamlit")  # Streamlit turns ":material/" into an icon before
# it parses the markdown, escaped colon or not: the "/" is escaped too
# - at the start of a line, what opens a block there: a heading ("# x"), a list item ("- x",
#   "+ x", "1. x"), a setext underline or a rule ("===", "---"); "-1.5" and "0.0001" open none.
_LINE_START_MARK = re.compile(
    r"^([ \t]*)(?=[-=]+[ \t]*$|[-+](?:[ \t]|$)|#{1,6}(?:[ \t]|$))([#+=-])", re.MULTILINE
)
_LINE_START_NUMBER = re.compile(r"^([ \t]*\d{1,9})([.)])(?=[ \t]|$)", re.MULTILINE)
# GitHub's literal autolinks (a bare "https://host.tld/x", "www.x.tld", "a@b.tld") are found in
# the text after escapes are undone, so no backslash stops them: such a word becomes a code span.
_AUTOLINKED = re.compile(r"https?://|www\.|[-.\w+]@[-\w]+\.[-\w]", re.IGNORECASE)
_WORDS = re.compile(r"(\s+)")
_LINE_BREAKS = re.compile(r"\r\n?|\n")
_BACKTICK_RUNS = re.compile(r"`+")


def plain(text: object) -> str:
    """``text`` for a markdown string, shown character for character; its line breaks stay line
    breaks, a word that markdown would make a link (a URL, an e-mail address) shows as code.
    ``None`` is the empty string."""
    value = _LINE_BREAKS.sub("\n", "" if text is None else str(text))
    words = _WORDS.split(value)  # words at even positions, the whitespace between at odd ones
    shown = "".join(
        part if index % 2 else (code(part) if _AUTOLINKED.search(part) else _escaped(part))
        for index, part in enumerate(words)
    )
    shown = _LINE_START_NUMBER.sub(r"\1\\\2", _LINE_START_MARK.sub(r"\1\\\2", shown))
    return shown.replace("\n", "  \n")  # a hard line break: markdown would join the lines


def _escaped(word: str) -> str:
    entities = {match.start() for match in _ENTITY.finditer(word)}
    colons = {m.start() for m in _SHORTCODE.finditer(word)}
    colons |= {m.start() + len(m.group(1)) - 1 for m in _SHORTCODE.finditer(word)}
    out = []
    for index, char in enumerate(word):
        before = word[index - 1] if index else ""
        after = word[index + 1] if index + 1 < len(word) else ""
        if (
            char in _ALWAYS
            or (char == "_" and not (before.isalnum() and after.isalnum()))
            or (char == ":" and (bool(after) or index in colons))
            or index in entities
            or (char == "/" and word[:index].endswith(_ICON_PREFIXES))
        ):
            out.append("\\")
        out.append(char)
    return "".join(out)


def plain_line(text: object) -> str:
    """``plain`` on one line, for labels (buttons, tabs, expanders, metrics): line breaks become
    spaces."""
    return plain(_LINE_BREAKS.sub(" ", "" if text is None else str(text)))


def code(text: object) -> str:
    """``text`` as an inline code span (a path, a file or run name): shown as it is, in monospace.

    The span is fenced by one backtick more than the longest run of backticks in the text, so
    nothing in it closes the span early; a text that starts or ends with a backtick or a space is
    padded with one space each side (CommonMark strips exactly those)."""
    value = _LINE_BREAKS.sub(" ", "" if text is None else str(text))
    if not value.strip():
        return plain(value)
    fence = "`" * (max((len(run) for run in _BACKTICK_RUNS.findall(value)), default=0) + 1)
    pad = " " if value[0] in "` " or value[-1] in "` " else ""
    return f"{fence}{pad}{value}{pad}{fence}"


# What CommonMark lets a backslash escape: every ASCII punctuation character.
_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def unplain(text: object) -> str:
    """The text that ``plain`` was given, for tables and dataframes, which show text as it is: a
    reason escaped for markdown showed its backslashes there ("6.0 KB \\< 7.1 GB").

    Undoes what ``plain`` does: the hard line breaks, the backslash escapes and the code spans
    of link-like words."""
    value = ("" if text is None else str(text)).replace("  \n", "\n")
    out: list[str] = []
    index, end = 0, len(value)
    while index < end:
        char = value[index]
        if char == "\\" and index + 1 < end and value[index + 1] in _PUNCTUATION:
            out.append(value[index + 1])
            index += 2
        elif char == "`":
            fence = len(_BACKTICK_RUNS.match(value, index).group())
            close = _closing_fence(value, index + fence, fence)
            if close is None:  # no span: the backticks are text
                out.append(value[index : index + fence])
                index += fence
                continue
            inner = value[index + fence : close]
            if len(inner) > 2 and inner[0] == inner[-1] == " " and inner.strip():
                inner = inner[1:-1]  # the padding ``code`` adds around a backtick or a space
            out.append(inner)
            index = close + fence
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _closing_fence(value: str, start: int, fence: int) -> int | None:
    """Where the run of exactly ``fence`` backticks that closes a code span begins."""
    for run in _BACKTICK_RUNS.finditer(value, start):
        if len(run.group()) == fence:
            return run.start()
    return None
