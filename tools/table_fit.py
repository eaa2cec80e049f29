"""List the tables of the built site that overflow the content column at a given window width.

    python tools/table_fit.py [--width 1200] [--html _build/html]

Needs a headless Chromium (Debian: ``apt-get install chromium``). The check loads every page
in an iframe of the given width and compares each table's right edge with the right edge of
the article's content box (its padding excluded: a table over the padding already scrolls).
Exit status 1 when a table overflows, so it can gate a layout change; CI does not run it (no
browser there).
"""

from __future__ import annotations

import argparse
import html as entities
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = ("_static", "_sources", "_modules", "genindex", "search", "_table_fit")

CHECK = """<html><body style="margin:0"><pre id=out></pre><script>
const pages = PAGES, width = WIDTH, found = [];
function check(p, d) {
  const a = d.querySelector('article.bd-article');
  if (!a) return;
  const s = d.defaultView.getComputedStyle(a);
  const right = a.getBoundingClientRect().right - parseFloat(s.paddingRight);
  d.querySelectorAll('article table').forEach((t, i) => {
    const over = t.getBoundingClientRect().right - right;
    if (over > 0.5) found.push(`${p}: table ${i} overflows by ${Math.round(over)} px: ` +
                               (t.innerText || '').slice(0, 50).replace(/\\s+/g, ' '));
  });
}
(async () => {
  for (const p of pages) await new Promise(done => {
    const f = document.createElement('iframe');
    f.style.width = width + 'px'; f.style.height = '800px';
    f.onload = () => setTimeout(() => { check(p, f.contentDocument); f.remove(); done(); }, 300);
    f.src = p; document.body.appendChild(f);
  });
  document.getElementById('out').textContent = found.join('\\n') + '\\nDONE';
})();
</script></body></html>"""


def pages(html: Path) -> list[str]:
    """The site's pages, relative to ``html``."""
    return sorted(str(p.relative_to(html)) for p in html.rglob("*.html")
                  if not any(part.startswith(SKIP) for part in p.relative_to(html).parts))


def check_page(html: Path, width: int) -> str:
    """The checking page: loads every page of ``html`` at ``width`` pixels."""
    return CHECK.replace("PAGES", json.dumps(pages(html))).replace("WIDTH", str(int(width)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1200, help="window width in px")
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    args = parser.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("table_fit: no chromium on PATH (Debian: apt-get install chromium)")
    if not (args.html / "index.html").is_file():
        sys.exit(f"table_fit: no built site at {args.html} (run `make book` first)")
    page = args.html / "_table_fit.html"  # inside the site: file:// iframes need one origin
    page.write_text(check_page(args.html, args.width))
    try:
        with tempfile.TemporaryDirectory() as profile:
            dom = subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu",
                 "--allow-file-access-from-files", f"--window-size={args.width},900",
                 "--virtual-time-budget=120000", f"--user-data-dir={profile}", "--dump-dom",
                 page.resolve().as_uri()],
                capture_output=True, text=True, timeout=600, check=False).stdout
    finally:
        page.unlink()
    report = re.search(r"<pre id=\"out\">(.*?)DONE</pre>", dom, re.S)
    if report is None:
        sys.exit("table_fit: the browser did not finish the check (raise the time budget)")
    lines = [entities.unescape(line) for line in report.group(1).splitlines() if line.strip()]
    print("\n".join(lines) or f"every table fits at {args.width} px")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
