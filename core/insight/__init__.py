"""What the pages, reports and API make of the stored rows: roll-ups by agent, team and period,
the session table and agent scorecards, each person's sessions, baselines and journey, and
alerts judged again under other rules. Every function takes a core.storage.queries.Reader and
reads only through it, so its viewer's scope holds; the numbers come from core.analysis.
Imports storage, index and the rooms below them; reporting and admin may import it."""
