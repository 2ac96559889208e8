"""The hub's web dashboard: server-rendered HTML fragments, SVG charts, and one small page script.

Served by the hub itself (`hub/api/dashboard.py`): everything a page loads comes from the hub.
"""
