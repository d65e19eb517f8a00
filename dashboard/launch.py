"""`emoscope dashboard`: `streamlit run` on the app file, for one database."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"


def command(port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
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
