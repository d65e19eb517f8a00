"""`emoscope dashboard`: serve the Streamlit app on a DB file."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"


def command(port: int) -> list[str]:
    return [sys.executable, "-m", "dashboard.launch", "run", str(APP), "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            # Users see one sentence per failure, never a trace (the guard logs it instead).
            "--client.showErrorDetails", "false", "--client.toolbarMode", "viewer"]


def run_dashboard(db: Path, port: int = 8501) -> int:
    """Run the app until interrupted; returns streamlit's exit code."""
    env = dict(os.environ, EMOSCOPE_DB=str(Path(db).resolve()))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APP.parent.parent),
                                                      env.get("PYTHONPATH")]))
    if not Path(db).exists():
        print(f"note: {db} does not exist yet; the dashboard will explain how to ingest.",
              file=sys.stderr)
    print(f"Emoscope dashboard on http://localhost:{port} (database {db})", file=sys.stderr)
    try:
        return subprocess.call(command(port), env=env)
    except KeyboardInterrupt:
        return 0


def _serve() -> int:
    """`streamlit run` for this app. Streamlit treats a `pages/` folder beside the entry script
    as a legacy multipage app until st.navigation first runs, so a server's first session (or
    one that opens on a page's URL) would run a page without app.py. Our pages/ only holds
    st.navigation pages: say so before Streamlit starts."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli
    PagesManager.uses_pages_directory = False
    sys.argv = ["streamlit", *sys.argv[1:]]
    return cli.main()


if __name__ == "__main__":
    sys.exit(_serve())
