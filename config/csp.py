"""The Content-Security-Policy header on every response.

Scripts and styles come only from the studio's own static files: no inline
<script>, no event-handler attributes, no style attributes, no eval. The
pages keep their JavaScript in static/js/ and their CSS in static/css/;
data for a script travels in `json_script` blocks, which are not run.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    # 'self' covers the job page's websocket (ws:// or wss:// to the same host) and the compare page's stream.
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


# The pages that draw plotly charts. plotly.js writes style attributes and style rules while it draws (the
# mode bar, legend, hover labels); its strict mode instead needs its plotly.css, which the plotly Python
# package that serves plotly.min.js here does not ship. Measured in Chromium: with style-src 'self' the
# charts lose their layout. These pages alone allow inline style; scripts stay 'self' everywhere, and their
# markup holds no style of its own (tests/test_page_security.py).
INLINE_STYLE_PAGES = {"job_detail", "compare_jobs", "sweep_detail"}


def policy_header(inline_style=False):
    policy = {**POLICY, **getattr(settings, "CONTENT_SECURITY_POLICY", {})}
    if inline_style:
        policy["style-src"] = policy["style-src"] + " 'unsafe-inline'"
    return "; ".join(f"{directive} {sources}" for directive, sources in policy.items())


class ContentSecurityPolicyMiddleware:
    # Both kinds, so the async views (streams, downloads) take no detour through a thread.
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.header = policy_header()
        self.chart_header = policy_header(inline_style=True)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self._acall(request)
        return self._with_policy(request, self.get_response(request))

    async def _acall(self, request):
        return self._with_policy(request, await self.get_response(request))

    def _with_policy(self, request, response):
        match = getattr(request, "resolver_match", None)
        charts = match is not None and match.url_name in INLINE_STYLE_PAGES
        response.headers.setdefault("Content-Security-Policy", self.chart_header if charts else self.header)
        return response
