"""The xml type: well-formedness as SQL Server checks it when a string becomes xml.

Untyped xml holds a document or a fragment (several top-level elements, text), so the value is
checked inside a synthetic root element, after its XML declaration (which SQL Server does not
keep either). A DTD is refused (6359, as SQL Server's CAST does), so no entity is ever declared
or expanded. Errors are SQL Server's "XML parsing: line L, character C, ..." messages: 9400
unexpected end of input, 9436 end tag does not match start tag, 9421 anything else (an illegal
character or name).
"""

from __future__ import annotations

import re
from xml.parsers import expat

from ._errors import SqlError

_DECLARATION = re.compile(r"^\s*<\?xml\s[^>]*\?>", re.IGNORECASE)
_END_OF_INPUT = {
    expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS],
    expat.errors.codes[expat.errors.XML_ERROR_UNCLOSED_TOKEN],
    expat.errors.codes[expat.errors.XML_ERROR_PARTIAL_CHAR],
    expat.errors.codes[expat.errors.XML_ERROR_UNCLOSED_CDATA_SECTION],
}
_MISMATCH = expat.errors.codes[expat.errors.XML_ERROR_TAG_MISMATCH]
_ROOT = "tds-fragment-root"


def check_xml(text: str) -> str:
    """The xml value of ``text`` (its XML declaration dropped), or SqlError 9400/9436/9421."""
    body = _DECLARATION.sub("", text, count=1)
    if "<!DOCTYPE" in body:
        # as CAST/CONVERT without style 2 in SQL Server (and no entity expansion to guard)
        raise SqlError(
            6359,
            "Parsing XML with internal subset DTDs not allowed. Use CONVERT with style option 2 "
            "to enable limited internal subset DTD support.",
        )
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        parser.Parse(f"<{_ROOT}>{body}</{_ROOT}>", True)
    except expat.ExpatError as exc:
        line = exc.lineno
        column = exc.offset + 1 - (0 if line > 1 else len(_ROOT) + 2)
        # the synthetic root's end tag is where an unclosed element of the value shows up
        unclosed = exc.code == _MISMATCH and column > len(body)
        if exc.code in _END_OF_INPUT or unclosed:
            number, what = 9400, "unexpected end of input"
        elif exc.code == _MISMATCH:
            number, what = 9436, "end tag does not match start tag"
        else:
            number, what = 9421, f"illegal name character ({expat.errors.messages[exc.code]})"
        raise SqlError(
            number, f"XML parsing: line {line}, character {max(1, column)}, {what}"
        ) from None
    return body
