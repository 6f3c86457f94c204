"""What every rendered report must be, checked on its HTML text (no browser): self-contained, no
script but the report's own (allowed by its hash) and the data island, every id unique, every
in-page link and image map resolving."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []
        self.handlers: list[str] = []
        self.ids: list[str] = []
        self.maps: list[str] = []
        self.usemaps: list[str] = []
        self.scripts: list[tuple[dict, str]] = []
        self.areas: list[dict] = []
        self._script: dict | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k, v in attrs:
            if k in ("src", "href", "srcset", "poster", "data", "action", "xlink:href", "formaction"):
                self.refs.append(v or "")
            if k.startswith("on"):
                self.handlers.append(k)
            if k == "id":
                self.ids.append(v or "")
        if tag == "map":
            self.maps.append(a.get("name") or "")
        if tag == "area":
            self.areas.append(a)
        if "usemap" in a:
            self.usemaps.append(a["usemap"] or "")
        if tag == "script":
            self._script, self._text = a, []

    def handle_data(self, data):
        if self._script is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._text)))
            self._script = None

    @property
    def csp(self) -> str:
        return self._csp

    def feed_page(self, html: str) -> Page:
        self.feed(html)
        m = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
        assert m, "no Content-Security-Policy"
        self._csp = m.group(1).replace("&#39;", "'")
        return self

    @property
    def island(self) -> dict | None:
        data = [t for a, t in self.scripts if a.get("type") == "application/json"]
        return json.loads(data[0]) if data else None


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def check_page(html: str) -> Page:
    """Parse a report and assert what every report must be; the parsed page for more checks."""
    p = Page().feed_page(html)
    external = [r[:40] for r in p.refs if not r.startswith(("data:", "#"))]
    assert p.refs and not external, external
    assert not re.findall(r"url\((?!['\"]?data:)", html) and "@import" not in html
    assert not p.handlers, p.handlers
    csp = p.csp
    assert "default-src 'none'" in csp and "img-src data:" in csp and "connect-src 'none'" in csp
    script_src = re.search(r"script-src ([^;]+)", csp).group(1).split()
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src, script_src
    for attrs, text in p.scripts:
        assert "src" not in attrs
        if attrs.get("type") == "application/json":
            assert "<" not in text and ">" not in text, "the data island must not hold markup"
            json.loads(text)
        else:  # the one kind of script that runs: the report's own, by its hash
            assert sha256_source(text) in script_src, "a script the CSP does not allow by hash"
    dupes = {i for i in p.ids if p.ids.count(i) > 1}
    assert not dupes, sorted(dupes)[:10]
    ids = set(p.ids)
    dangling = sorted({r for r in p.refs if r.startswith("#") and r[1:] not in ids})
    assert not dangling, dangling[:10]
    assert all(u.startswith("#") and u[1:] in p.maps for u in p.usemaps), p.usemaps[:5]
    return p
