"""The board's screenshots in docs/board/: the page at 1366 pixels (overview, a run's
drill-down, the paired comparisons, the plots) from a store made by make_demo_store.sh.

    docs/board/make_demo_store.sh /tmp/demo && .venv/bin/python docs/board/screenshots.py /tmp/demo/db
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))


def main(db: str) -> None:
    from browser import chromium, console_errors

    page = Path(db).with_name("board.html")
    subprocess.run([sys.executable, "-m", "lmboard", "board", "--db", db, "--out", str(page)], check=True, cwd=ROOT)
    d = chromium()
    d.set_window_size(1366, 900)
    out = ROOT / "docs" / "board"
    try:
        d.get(page.resolve().as_uri())
        steps = {
            "overview-1366.png": "",
            "drill-1366.png": "document.querySelector('button[data-view=classification]').click();"
                              "document.querySelectorAll('#board tbody tr')[2].querySelector('a').click();"
                              "document.getElementById('wrong-only').click()",
            "paired-1366.png": "document.querySelector('#drill .close').click();"
                               "document.querySelector('button[data-view=paired]').click()",
            "plots-1366.png": "document.querySelector('button[data-view=plots]').click()",
        }
        for name, script in steps.items():
            if script:
                d.execute_script(script)
            time.sleep(1.0)
            d.execute_script("window.scrollTo(0, 0)")
            overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (name, overflow)
            d.save_screenshot(str(out / name))
            print(out / name)
        assert console_errors(d) == []
    finally:
        d.quit()


if __name__ == "__main__":
    main(sys.argv[1])
