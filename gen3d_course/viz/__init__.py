"""Visualisation helpers: `panels` (every slider panel, in a live or a static form), `views3d`
(plotly) and `plots` (matplotlib); `widgets` and `image_sliders` hold the live forms."""
