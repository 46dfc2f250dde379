"""GraphiQL as a user meets it: `taskql serve` (a real uvicorn on the test database, with the
demo data), its page in a real Chromium (Debian's, driven by Playwright), the example run
as printed: LogIn from a fresh page, then the headers it says to paste, then ProjectTasks.
Every asset is served by taskql itself, under a Content-Security-Policy of 'self'."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    Request,
    Response,
    expect,
    sync_playwright,
)

from api.graphiql import SCRIPTS, STATIC_DIR, STYLESHEETS
from db.demo import ORGANIZATIONS
from tests.conftest import ScratchDatabase
from tests.test_serve import serve, stop, wait_healthy

#: Debian's chromium package (/usr/bin/chromium); CI installs it (.ci/run). Another
#: Chromium: TASKQL_CHROMIUM=/path/to/chromium.
CHROMIUM = os.environ.get("TASKQL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000  # 3.5 MB of GraphiQL to parse on a shared 2-core machine

ACME_NAME, _, ACME_PROJECTS = ORGANIZATIONS["acme"]


@pytest.fixture(scope="module")
def base_url(test_database: ScratchDatabase) -> Iterator[str]:
    """`taskql serve --demo` on the test database: the demo users log in as printed."""
    process, port = serve(test_database.env(), "--demo")
    try:
        wait_healthy(process, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        output = stop(process)
        assert "Traceback" not in output


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        # Not a skip: CI installs Chromium, and a missing browser must fail the run.
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (see .ci/run)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def page_html(base_url: str) -> httpx.Response:
    return httpx.get(f"{base_url}/graphql", headers={"Accept": "text/html"}, timeout=10)


def asset_urls(html: str) -> list[str]:
    return re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="([^"]*)"', html)


def test_the_page_references_only_its_own_assets_under_a_strict_csp(base_url: str) -> None:
    response = page_html(base_url)
    assert response.status_code == 200
    html = response.text
    assert "http://" not in html
    assert "https://" not in html
    urls = asset_urls(html)
    assert urls[0] == "data:,"  # the icon: no /favicon.ico request
    served = [url.split("?")[0].removeprefix("/graphql/static/") for url in urls[1:]]
    assert served == [*STYLESHEETS, *SCRIPTS]
    # No inline script: every <script> has a src, but the example's JSON data block.
    inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", html)
    assert inline == [' id="taskql-graphiql-config" type="application/json"']
    config = re.search(r'type="application/json">(.*?)</script>', html, re.DOTALL)
    assert config is not None
    example = json.loads(config.group(1))
    assert "mutation LogIn" in example["query"]
    assert "query ProjectTasks" in example["query"]
    assert '"Bearer <token from LogIn>"' in example["query"]
    assert example["headers"] == ""  # nothing that the middleware would refuse with 401
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["style-src"] == "'self' 'unsafe-inline'"
    assert policy["frame-ancestors"] == "'none'"


def test_assets_are_the_vendored_bytes_gzipped_and_cached_for_a_year(base_url: str) -> None:
    html = page_html(base_url).text
    for url in asset_urls(html)[1:]:
        name = url.split("?")[0].rsplit("/", 1)[1]
        response = httpx.get(f"{base_url}{url}", timeout=10)
        assert response.status_code == 200, url
        assert response.headers["content-encoding"] == "gzip"  # httpx asks for gzip
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["content-type"].startswith(
            "text/javascript" if name.endswith(".js") else "text/css"
        )
        assert response.content == (STATIC_DIR / name).read_bytes()
        digest = base64.b64encode(hashlib.sha384(response.content).digest()).decode()
        assert f'{url}" integrity="sha384-{digest}"' in html
        revalidated = httpx.get(
            f"{base_url}{url}", headers={"If-None-Match": response.headers["etag"]}, timeout=10
        )
        assert revalidated.status_code == 304
    unversioned = httpx.get(f"{base_url}/graphql/static/graphiql.min.js", timeout=10)
    assert unversioned.status_code == 200
    assert unversioned.headers["cache-control"] == "no-cache"
    for missing in ("README.md", "LICENSE.react", "..%2Fgraphiql.py", "nope.js"):
        assert httpx.get(f"{base_url}/graphql/static/{missing}", timeout=10).status_code == 404


def test_the_vendored_files_are_the_npm_packages_of_the_readme() -> None:
    """api/static/graphiql/README.md names each file's package and SHA-384: the files are
    those bytes (the digests are also the integrity values of Strawberry's CDN tags)."""
    readme = (STATIC_DIR / "README.md").read_text()
    rows = re.findall(
        r"^\| `([^`]+)` \| `([^`]+)` \| `[^`]+` \| ([\d,]+) \| `([^`]+)` \|$", readme, re.M
    )
    assert {name for name, *_ in rows} == {*STYLESHEETS, *SCRIPTS} - {
        "taskql-graphiql.css",
        "taskql-graphiql.js",
    }
    for name, _package, size, sha384 in rows:
        body = (STATIC_DIR / name).read_bytes()
        assert len(body) == int(size.replace(",", "")), name
        assert base64.b64encode(hashlib.sha384(body).digest()).decode() == sha384, name


def result_pane(page: Page) -> str:
    return page.locator(".result-window").inner_text().replace("\xa0", " ")


def test_the_example_runs_in_chromium_from_a_fresh_page(base_url: str, browser: Browser) -> None:
    context = browser.new_context()  # fresh: nothing in localStorage
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    requests: list[Request] = []
    responses: list[Response] = []
    console: list[ConsoleMessage] = []
    page_errors: list[Error] = []
    # (Playwright wraps the handler: a bound builtin like list.append cannot be one.)
    page.on("request", lambda request: requests.append(request))
    page.on("response", lambda response: responses.append(response))
    page.on("console", lambda message: console.append(message))
    page.on("pageerror", lambda error: page_errors.append(error))
    # Injected by the browser, not by the page: allowed by any CSP.
    page.add_init_script(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation', e =>"
        " window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )

    def graphql_post(response: Response) -> bool:
        return response.request.method == "POST" and response.url.endswith("/graphql")

    try:
        # The schema fetch works anonymously (the Headers pane starts empty).
        with page.expect_response(graphql_post) as introspection:
            page.goto(f"{base_url}/graphql")
        assert introspection.value.status == 200
        assert "__schema" in introspection.value.json()["data"]
        assert page.title() == "taskql · GraphiQL"

        # 1) LogIn, chosen from the run button's menu, as the example says.
        page.locator(".graphiql-execute-button").click()
        with page.expect_response(graphql_post) as login:
            page.get_by_role("menuitem", name="LogIn").click()
        assert login.value.status == 200
        assert "authorization" not in login.value.request.headers
        expect(page.locator(".result-window")).to_contain_text('"token": "', timeout=TIMEOUT_MS)
        found = re.search(r'"token": "([^"]+)"', result_pane(page))
        assert found is not None, result_pane(page)
        token = found.group(1)
        assert login.value.json()["data"]["logIn"] == {"token": token, "errors": []}

        # 2) The headers the example prints, with that token, pasted into Headers.
        page.get_by_text("Headers", exact=True).click()
        page.locator(".graphiql-editor-tool .CodeMirror:visible").click()
        page.keyboard.insert_text(
            json.dumps({"Authorization": f"Bearer {token}", "X-Organization": "acme"})
        )

        # 3) ProjectTasks: cursor inside it, Ctrl-Enter.
        page.locator(
            ".graphiql-query-editor .CodeMirror-line", has_text="query ProjectTasks"
        ).click(position={"x": 2, "y": 2})
        with page.expect_response(graphql_post) as tasks:
            page.keyboard.press("Control+Enter")
        assert tasks.value.status == 200
        assert tasks.value.request.headers["authorization"] == f"Bearer {token}"
        assert tasks.value.request.headers["x-organization"] == "acme"
        body = tasks.value.json()
        assert "errors" not in body, body
        organization = body["data"]["organization"]
        assert organization["name"] == ACME_NAME
        names = [project["name"] for project in organization["projects"]["nodes"]]
        assert sorted(names) == sorted(ACME_PROJECTS)
        # ... and on the page, as the user reads it.
        expect(page.locator(".result-window")).to_contain_text(
            f'"name": "{ACME_NAME}"', timeout=TIMEOUT_MS
        )
        shown = result_pane(page)
        assert f'"name": "{names[0]}"' in shown, shown
        assert organization["projects"]["nodes"][0]["tasks"]["totalCount"] > 0

        violations = page.evaluate("window.__violations")
    finally:
        context.close()

    assert violations == []
    assert [m.text for m in console if "Content Security Policy" in m.text] == []
    assert page_errors == []
    assert [f"{r.status} {r.url}" for r in responses if r.status >= 400] == []
    hosts = {urlsplit(request.url).hostname for request in requests}
    assert hosts == {"127.0.0.1"}, sorted({r.url for r in requests})
    loaded = {urlsplit(r.url).path for r in requests}
    assert {f"/graphql/static/{name}" for name in (*STYLESHEETS, *SCRIPTS)} <= loaded
