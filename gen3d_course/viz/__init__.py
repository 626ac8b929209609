"""Visualisation helpers: import from `views3d` (plotly), `plots` (matplotlib) or `widgets` (ipywidgets)."""
