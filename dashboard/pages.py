"""The dashboard's pages, listed once: `app.py` builds the navigation from `PAGES`, and the
tests open every page from it. A page is a file in `dashboard/views/` registered here with
`register_page`."""
from __future__ import annotations

from dataclasses import dataclass

VIEWS = "views"  # the folder of page files (not "pages/": Streamlit would auto-discover it)
WHO = ("everyone", "uploaders", "admins")  # who gets the page: any role, can_upload, is_admin


@dataclass(frozen=True)
class Page:
    file: str   # in dashboard/views/
    title: str  # its name in the navigation; the heading (ui.page) of every page for everyone
    icon: str
    who: str = "everyone"

    @property
    def slug(self) -> str:
        return self.file.removesuffix(".py")

    @property
    def path(self) -> str:
        return f"{VIEWS}/{self.file}"


PAGES: list[Page] = []  # in navigation order; the first is the default page


def register_page(file: str, title: str, icon: str, who: str = "everyone") -> Page:
    if who not in WHO:
        raise ValueError(f"a page is for one of {', '.join(WHO)}, not {who!r}")
    page = Page(file, title, icon, who)
    PAGES.append(page)
    return page


def for_viewer(viewer) -> list[Page]:
    """The pages `viewer` (core.guard.access.Viewer) may open, in navigation order."""
    may = {"everyone": True, "uploaders": viewer.can_upload, "admins": viewer.is_admin}
    return [p for p in PAGES if may[p.who]]


def everyone() -> list[Page]:
    return [p for p in PAGES if p.who == "everyone"]


register_page("overview.py", "Overview", ":material/dashboard:")
register_page("session.py", "Session", ":material/graphic_eq:")
register_page("agents.py", "Agents", ":material/support_agent:")
register_page("person.py", "Person", ":material/person:")
register_page("alerts.py", "Volatility & alerts", ":material/notifications:")
register_page("search.py", "Search", ":material/search:")
register_page("similar.py", "Similar moments", ":material/join_inner:")
register_page("patterns.py", "Patterns", ":material/bubble_chart:")
register_page("reports.py", "Reports", ":material/download:")
register_page("calibration.py", "Calibration", ":material/tune:")
register_page("upload.py", "Upload", ":material/upload:", who="uploaders")  # supervisors, admins
register_page("admin.py", "Audit & erasure", ":material/shield_person:", who="admins")
