"""Pages, login and static assets of the web console (the box's and the hub's).

Pages are plain HTML templates filled with ``string.Template`` (escaped
values only) and one script per console; the data comes from the JSON API
and the live WebSocket feeds, never from values embedded in the page, and no
page carries a token. Static assets (uPlot, vendored from npm, and our CSS
and scripts) are read from the package on request and served with a
version in the URL and a year's ``Cache-Control: immutable``: the box works
offline and a browser fetches each asset once per release.
"""

from __future__ import annotations

import hashlib
import html
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from agent.core.web.session import CONSOLE, Console, clear_cookie, install_middleware, set_cookie, viewer_of

HERE = Path(__file__).resolve().parent
#: the shell every console shares: layout and login pages (their common head.html); console.css/js, uPlot
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain", ".png": "image/png"}
#: what a page may load and connect to: only its own origin (the feeds are same-origin WebSockets)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make form posts say Origin: null
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Page:
    slug: str  # URL: /ui/<slug>
    title: str
    template: str  # file in a templates folder


class Assets:
    """Static files from a few folders, each URL carrying a short hash of the file's content."""

    def __init__(self, folders: Sequence[Path]) -> None:
        self.folders = list(folders)
        self._versions: dict[str, str] = {}

    def find(self, name: str) -> Path | None:
        if "/" in name or name.startswith("."):
            return None
        for folder in self.folders:
            path = folder / name
            if path.is_file():
                return path
        return None

    def url(self, name: str) -> str:
        version = self._versions.get(name)
        if version is None:
            path = self.find(name)
            version = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path else "0"
            self._versions[name] = version
        return f"/static/{name}?v={version}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = self.find(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="no such console asset")
        immutable = request.query.get("v") == self.url(path.name).rsplit("=", 1)[1]
        headers = {
            "Content-Type": _TYPES.get(path.suffix, "application/octet-stream"),
            "Cache-Control": "public, max-age=31536000, immutable" if immutable else "public, max-age=300",
            "X-Content-Type-Options": "nosniff",
        }
        return web.FileResponse(path, headers=headers)


class Renderer:
    """Fills the layout with one page's body; knows the console's pages for the navigation."""

    def __init__(self, product: str, pages: Sequence[Page], folders: Iterable[Path], assets: Assets) -> None:
        self.product = product
        self.pages = list(pages)
        self.folders = [*folders, TEMPLATES]
        self.assets = assets

    def _template(self, name: str) -> string.Template:
        for folder in self.folders:
            path = folder / name
            if path.is_file():
                return string.Template(path.read_text())
        raise FileNotFoundError(name)

    def _head(self, title: str) -> str:
        """The start of every document up to its <title> (head.html): shared by the layout and login."""
        head = self._template("head.html").substitute(title=title, product=html.escape(self.product))
        return head.rstrip("\n")

    def page(self, request: web.Request, page: Page, script: str, **values: str) -> web.Response:
        viewer = viewer_of(request)
        assert viewer is not None
        nav = "".join(
            f'<li><a href="/ui/{p.slug}"{" aria-current=page" if p is page else ""}>{html.escape(p.title)}</a></li>'
            for p in self.pages
        )
        body = self._template(page.template).safe_substitute({k: html.escape(v) for k, v in values.items()})
        document = self._template("layout.html").substitute(
            head=self._head(html.escape(page.title)),
            product=html.escape(self.product),
            title=html.escape(page.title),
            page=html.escape(page.slug),
            nav=nav,
            main=body,
            user=html.escape(viewer.name),
            role=html.escape(viewer.role),
            logout=""
            if viewer.open
            else '<form method="post" action="/logout"><button>Log out</button></form>',
            css=self.assets.url("console.css"),
            uplot_css=self.assets.url("uPlot.min.css"),
            uplot=self.assets.url("uPlot.iife.min.js"),
            common=self.assets.url("console.js"),
            script=self.assets.url(script),
        )
        return web.Response(text=document, content_type="text/html", headers=PAGE_HEADERS)

    def login(self, error: str = "", status: int = 200, next_path: str = "/") -> web.Response:
        document = self._template("login.html").substitute(
            head=self._head("Log in"),
            product=html.escape(self.product),
            error=f'<p class="error" role="alert">{html.escape(error)}</p>' if error else "",
            next=html.escape(next_path),
            css=self.assets.url("console.css"),
        )
        return web.Response(text=document, status=status, content_type="text/html", headers=PAGE_HEADERS)


def safe_next(value: str) -> str:
    """Only a path on this console: never another site (//host) or a scheme."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def require_viewer(request: web.Request) -> web.Response | None:
    """None when someone is logged in; else a redirect to the login page."""
    if viewer_of(request) is not None:
        return None
    target = safe_next(request.path_qs)
    raise web.HTTPSeeOther(f"/login?next={quote(target, safe='/')}")


def login_handlers(renderer: Renderer) -> tuple:
    async def login_page(request: web.Request) -> web.Response:
        if viewer_of(request) is not None and not request.query.get("again"):
            raise web.HTTPSeeOther(safe_next(request.query.get("next", "/")))
        return renderer.login(next_path=safe_next(request.query.get("next", "/")))

    async def login(request: web.Request) -> web.Response:
        console = request.app[CONSOLE]
        form = await request.post()
        next_path = safe_next(str(form.get("next", "/")))
        from agent.core.auth import source_key

        source = source_key(request.remote)
        wait = console.logins.wait(source)
        if wait > 0:
            response = renderer.login(
                f"Too many attempts; wait {max(1, int(wait + 0.999))} s and try again.", 429, next_path
            )
            response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
            return response
        token = str(form.get("token", "")).strip()
        info = await console.authenticate(token) if token else None
        if info is None:
            console.logins.failed(source)
            hint = (
                "edge-agent tokens create NAME --role viewer"
                if console.product == "edge-agent"
                else ("edge-hub tokens create NAME --role viewer")
            )
            return renderer.login(
                f"That token is not valid (unknown, revoked or expired). Create one on the machine with `{hint}`.",
                401,
                next_path,
            )
        sid = console.sessions.create(token)
        response = web.HTTPSeeOther(next_path)
        set_cookie(response, request, sid)
        raise response

    async def logout(request: web.Request) -> web.Response:
        from agent.core.web.session import COOKIE

        request.app[CONSOLE].sessions.drop(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/login")
        clear_cookie(response)
        raise response

    return login_page, login, logout


async def session_info(request: web.Request) -> web.Response:
    """Who the console thinks is looking (name, role); 401 without a session."""
    viewer = viewer_of(request)
    if viewer is None:
        return web.json_response({"error": {"code": "unauthorized", "message": "log in first"}}, status=401)
    return web.json_response({"name": viewer.name, "role": viewer.role, "open": viewer.open})


def add_common_routes(app: web.Application, renderer: Renderer, home: str) -> None:
    login_page, login, logout = login_handlers(renderer)

    async def root(request: web.Request) -> web.Response:
        require_viewer(request)
        raise web.HTTPSeeOther(f"/ui/{home}")

    app.router.add_get("/", root)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/ui/session", session_info)
    app.router.add_get("/static/{name}", renderer.assets.handle)
    app.router.add_get("/favicon.ico", _no_icon)


async def _no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"Cache-Control": "public, max-age=86400"})


def page_handler(renderer: Renderer, page: Page, script: str):
    async def handler(request: web.Request) -> web.Response:
        require_viewer(request)
        return renderer.page(request, page, script, **dict(request.match_info))

    return handler


def install_pages(
    app: web.Application,
    console: Console,
    *,
    before: Any,
    pages: Sequence[Page],
    folder: Path,
    home: str,
    script: str,
) -> Renderer:
    """One console on ``app``: its sessions (ahead of the ``before`` middleware), login, assets, pages.

    ``folder`` holds the console's own ``templates/`` and ``static/`` (beside the shared shell's);
    each page is ``/ui/<slug>`` with ``script``. Returns the renderer for pages with other URLs.
    """
    install_middleware(app, console, before=before)
    assets = Assets([folder / "static", STATIC])
    renderer = Renderer(console.product, pages, [folder / "templates"], assets)
    add_common_routes(app, renderer, home=home)
    for page in pages:
        app.router.add_get(f"/ui/{page.slug}", page_handler(renderer, page, script))
    return renderer
