"""The built site in a real headless browser (Debian's chromium through chromedriver).

For every HTML page of ``build/site-smoke`` and ``build/site`` (whichever exist; ``make docs-smoke`` /
``make docs`` build them), served by a local HTTP server: the page loads with no console error, every
``<img>`` has decoded (``naturalWidth > 0``), no executed cell shows a traceback, MathJax typeset the
page's maths without an error, and every link to another page of the site answers HTTP 200. Skips,
saying why, when chromium, chromedriver, selenium or the built site is missing.
"""
from __future__ import annotations

import functools
import http.server
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SITES = [REPO_ROOT / "build" / "site-smoke", REPO_ROOT / "build" / "site"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")
IMAGES_SCRIPT = """
const images = [...document.images];
images.forEach(image => { image.loading = "eager"; image.scrollIntoView(); });
return images.map(image => [image.currentSrc || image.src, image.complete, image.naturalWidth]);
"""
ERROR_OUTPUTS_SCRIPT = """
return [...document.querySelectorAll('.output.traceback, .output.error, div.cell_output .traceback')]
    .map(node => node.innerText.slice(0, 300));
"""
MATHJAX_SCRIPT = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) { done({loaded: false}); return; }
MathJax.startup.promise.then(() => done({loaded: true, errors: document.querySelectorAll('mjx-merror').length,
                                         rendered: document.querySelectorAll('mjx-container').length}));
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request otherwise
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # the browser cancelling a request it no longer needs
        pass


def _serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = _QuietServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _browser(profile: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[docs]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _check_page(driver, base: str, page: str, linked: set[str]) -> list[str]:
    """Problems on one page; internal links found there are added to ``linked``."""
    problems = []
    driver.get(base + page)
    images = driver.execute_script(IMAGES_SCRIPT)
    driver.execute_script("return new Promise(r => setTimeout(r, 100))")
    images = driver.execute_script(IMAGES_SCRIPT)
    problems += [f"{page}: image not rendered: {src}" for src, complete, width in images if not (complete and width > 0)]
    problems += [f"{page}: executed cell shows an error: {text!r}" for text in driver.execute_script(ERROR_OUTPUTS_SCRIPT)]
    if "Traceback (most recent call last)" in driver.find_element("tag name", "body").text:
        problems.append(f"{page}: a traceback is shown")
    mathjax = driver.execute_async_script(MATHJAX_SCRIPT)
    if mathjax.get("loaded") and mathjax["errors"]:
        problems.append(f"{page}: MathJax reported {mathjax['errors']} error(s)")
    if driver.execute_script("return document.querySelectorAll('.math').length") and not mathjax.get("rendered"):
        problems.append(f"{page}: the page has maths but MathJax rendered none")
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            problems.append(f"{page}: console error: {entry['message'][:300]}")
    for href in driver.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)"):
        if href.startswith(base):
            linked.add(urllib.parse.urldefrag(href)[0])
    return problems


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="chromium / chromedriver not installed (apt-get install -y chromium chromium-driver)")
@pytest.mark.parametrize("site", SITES, ids=lambda site: site.name)
def test_every_page_loads_renders_its_figures_and_links_resolve(site: Path, tmp_path: Path):
    if not (site / "index.html").is_file():
        pytest.skip(f"{site.relative_to(REPO_ROOT)} is not built (make {'docs-smoke' if 'smoke' in site.name else 'docs'})")
    pages = sorted(path.relative_to(site).as_posix() for path in site.rglob("*.html")
                   if "_static" not in path.parts and "_sources" not in path.parts)
    server, base = _serve(site)
    driver = _browser(tmp_path / "chromium-profile")
    problems, linked = [], set()
    try:
        for page in pages:
            problems += _check_page(driver, base, page, linked)
    finally:
        driver.quit()
    try:
        problems += [f"broken internal link: {url} (HTTP {status})"
                     for url in sorted(linked) if (status := _status(url)) != 200]
    finally:
        server.shutdown()
    assert len(pages) >= 10, f"only {len(pages)} pages: {pages}"
    assert any(page.startswith("notebooks/") for page in pages) and any(page.startswith("api/") for page in pages)
    assert not problems, "\n".join(problems)


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="chromium / chromedriver not installed")
def test_the_page_check_reports_a_broken_image_a_traceback_a_console_error_and_a_dead_link(tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(
        '<html><body><img src="missing.png"><div class="output traceback">ZeroDivisionError</div>'
        '<a href="gone.html">gone</a><script>console.error("boom")</script></body></html>')
    server, base = _serve(site)
    driver = _browser(tmp_path / "chromium-profile")
    linked = set()
    try:
        problems = _check_page(driver, base, "index.html", linked)
    finally:
        driver.quit()
    try:
        statuses = {url: _status(url) for url in linked}
    finally:
        server.shutdown()
    text = "\n".join(problems)
    assert "image not rendered" in text and "shows an error" in text and "boom" in text
    assert statuses == {base + "gone.html": 404}
