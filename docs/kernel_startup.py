"""Kernel start-up for the website build (docs/conf.py points PYTHONSTARTUP here).

In JupyterLab plotly sends its JSON mimetype, which a static page cannot draw; on the site every
figure becomes HTML that draws with the page's one local copy of plotly.js (no CDN, no MathJax).
A figure with frames (a static view's slider) opens on its first frame instead of playing them.
"""
import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer


class _SiteRenderer(MimetypeRenderer):
    def to_mimebundle(self, fig_dict):
        html = pio.to_html(fig_dict, include_plotlyjs=False, include_mathjax=False,
                           auto_play=False, full_html=False, default_width="100%",
                           default_height=525, validate=False)
        return {"text/html": html}


pio.renderers["site"] = _SiteRenderer()
pio.renderers.default = "site"
