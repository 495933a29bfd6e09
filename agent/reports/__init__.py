"""Reports people read: shift, daily and weekly summaries as PDF, HTML, Markdown and JSON."""
