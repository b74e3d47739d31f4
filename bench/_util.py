"""Small helpers shared by the benchmarks (not a benchmark itself).

Every benchmark is a plain script: `python bench/<name>.py` from the repository root. Python puts
the script's folder (bench/) on sys.path, so `import _util` works; importing it also puts the
repository root on sys.path, so `import comet` works without installing anything.
"""

from __future__ import annotations

import logging
import os
import resource
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "streamlit_app.py"
HISTORY_PAGE = "pages/history.py"
CREATE_PAGE = "pages/create.py"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Settings the app reads from the environment: a benchmark must never pick up the developer's.
APP_SETTINGS = ("COMETAPI_KEY", "COMETAPI_BASE_URL", "COMET_DATABASE_URL", "COMET_DATA_DIR")


def quiet() -> None:
    """Keep the output to the tables: Streamlit warns about running without `streamlit run`."""
    os.environ.setdefault("STREAMLIT_GLOBAL_SHOW_WARNING_ON_DIRECT_EXECUTION", "false")
    logging.disable(logging.WARNING)
    for name in ("streamlit", "comet"):
        logging.getLogger(name).setLevel(logging.ERROR)


def app_environment(data_dir: Path) -> None:
    """A cold app: its own data folder, and no key, base URL or database from the environment."""
    for name in APP_SETTINGS:
        os.environ.pop(name, None)
    os.environ["COMET_DATA_DIR"] = str(data_dir)


def clear_caches() -> None:
    """Between configurations: also stops the cached tracker, store and demo stand-in
    (their on_release hooks), exactly as the test suite's fixture does."""
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p90 of 20 samples is the 18th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-int(fraction * 100) * len(ordered) // 100))  # ceil(fraction * n)
    return ordered[min(rank, len(ordered)) - 1]


def rss_bytes() -> int:
    """Resident set size now."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    """Highest resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def mib(size: float) -> str:
    return f"{size / 2**20:,.1f} MiB"


def kib(size: float) -> str:
    return f"{size / 2**10:,.1f} KiB"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table, first column left-aligned, the rest right-aligned."""
    cells = [headers] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def machine() -> str:
    import platform

    import streamlit

    return (f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, "
            f"Streamlit {streamlit.__version__}, {platform.system()} {platform.release()}")
