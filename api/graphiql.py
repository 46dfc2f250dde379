"""GraphiQL served by taskql itself: pinned assets vendored in ``api/static/graphiql`` (its
README says which packages and versions), a page that references only them, under a
Content-Security-Policy that allows nothing but this origin. It works offline."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import html
import json
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

STATIC_DIR = Path(__file__).parent / "static" / "graphiql"
#: Where the assets are served, below the app's root path.
STATIC_PATH = "/graphql/static"

#: In the order the page loads them.
STYLESHEETS = ("graphiql.min.css", "graphiql-plugin-explorer.css", "taskql-graphiql.css")
SCRIPTS = (
    "react.production.min.js",
    "react-dom.production.min.js",
    "graphiql.min.js",
    "graphiql-plugin-explorer.umd.js",
    "taskql-graphiql.js",  # the bootstrap: no inline script on the page
)

#: GraphiQL needs 'unsafe-inline' for styles only: its dialogs and popovers inject <style>
#: elements and style attributes. Its fonts are data: URLs inside graphiql.min.css.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "font-src 'self' data:",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

#: Versioned asset URLs (``?v=`` the content hash) never change: browsers keep them a year.
IMMUTABLE = "public, max-age=31536000, immutable"

EXAMPLE_QUERY = """# taskql's example. A fresh page needs no headers.
#
# 1) Run LogIn: press the run button (the triangle)
#    and choose LogIn, or: cursor inside it, Ctrl-Enter.
#    Every demo user's password is taskql-demo.
# 2) Open Headers (below) and paste, with the token
#    that LogIn answered:
#    {"Authorization": "Bearer <token from LogIn>",
#     "X-Organization": "acme"}
#    (`make serve` prints such headers too.)
# 3) Run ProjectTasks: cursor inside it, Ctrl-Enter.
#
# Both headers or neither: a token that is not valid,
# or X-Organization without a token, is refused (401).

mutation LogIn {
  logIn(input: {email: "alice@acme.test", password: "taskql-demo"}) {
    token
    errors { message code }
  }
}

query ProjectTasks {
  organization {
    name
    projects(first: 5) {
      nodes {
        id
        name
        taskCountsByStatus { status count }
        tasks(first: 20, orderBy: PRIORITY, direction: DESC) {
          totalCount
          nodes {
            title
            status
            priority
            assignee { displayName }
            comments(first: 3) { nodes { content author { displayName } } }
          }
        }
      }
    }
  }
}
"""
#: The headers pasted after logging in (the Headers pane itself starts empty).
EXAMPLE_HEADERS = {"Authorization": "Bearer <token from LogIn>", "X-Organization": "acme"}

_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    media_type: str
    #: A prefix of the content's SHA-256: the ``v`` of its URL, and its ETag.
    version: str
    #: Subresource Integrity of the content, on the page's <script> and <link> elements.
    integrity: str


def _load(name: str) -> Asset:
    body = (STATIC_DIR / name).read_bytes()
    sha384 = base64.b64encode(hashlib.sha384(body).digest()).decode()
    return Asset(
        body=body,
        gzipped=gzip.compress(body, compresslevel=6, mtime=0),
        media_type=_MEDIA_TYPES[Path(name).suffix],
        version=hashlib.sha256(body).hexdigest()[:16],
        integrity=f"sha384-{sha384}",
    )


_assets: dict[str, Asset] | None = None


def load_assets() -> dict[str, Asset]:
    """Every served asset, read and compressed once per process (on first use)."""
    global _assets
    if _assets is None:
        _assets = {name: _load(name) for name in (*STYLESHEETS, *SCRIPTS)}
    return _assets


async def assets() -> dict[str, Asset]:
    if _assets is not None:
        return _assets
    return await asyncio.to_thread(load_assets)  # ~4 MB read and gzipped: not on the loop


def render_page(table: dict[str, Asset], root_path: str = "") -> str:
    """The GraphiQL page: local assets only, the example in a JSON data block."""

    def url(name: str) -> str:
        return html.escape(f"{root_path}{STATIC_PATH}/{name}?v={table[name].version}")

    links = "\n".join(
        f'    <link rel="stylesheet" href="{url(name)}" integrity="{table[name].integrity}" />'
        for name in STYLESHEETS
    )
    scripts = "\n".join(
        f'    <script src="{url(name)}" integrity="{table[name].integrity}"></script>'
        for name in SCRIPTS
    )
    config = json.dumps({"query": EXAMPLE_QUERY, "headers": ""})
    # Inside <script> only "</script" could end the element early: escape every "<".
    config = config.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>taskql · GraphiQL</title>
    <link rel="icon" href="data:," />
{links}
  </head>
  <body>
    <div id="graphiql" class="graphiql-container">Loading GraphiQL…</div>
    <script id="taskql-graphiql-config" type="application/json">{config}</script>
{scripts}
  </body>
</html>
"""


async def page(request: Request) -> HTMLResponse:
    root_path = request.scope.get("root_path", "").rstrip("/")
    return HTMLResponse(
        render_page(await assets(), root_path),
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


async def static(request: Request) -> Response:
    """One vendored asset: gzipped when the client accepts it, cached for a year when asked
    for by its versioned URL (as the page does), revalidated otherwise."""
    asset = (await assets()).get(request.path_params["name"])
    if asset is None:
        return PlainTextResponse("Not Found", status_code=404)
    etag = f'"{asset.version}"'
    versioned = request.query_params.get("v") == asset.version
    headers = {
        "Cache-Control": IMMUTABLE if versioned else "no-cache",
        "ETag": etag,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=asset.media_type, headers=headers)
