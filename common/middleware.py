from django.conf import settings

# Strict policy on every response: no inline scripts or styles anywhere; the portal's JS and
# CSS are files, and so are the API docs page's (templates/api/swagger_ui.html).
_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self' ws: wss:",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "object-src 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        # Stripe.js only where the portal loads it: the Stripe gateway with a publishable key.
        self.stripe_js = settings.PAYMENT_GATEWAY == "stripe" and bool(
            getattr(settings, "STRIPE_PUBLISHABLE_KEY", "")
        )

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" in response:
            return response
        policy = _CSP
        if self.stripe_js:
            # Stripe.js (Elements) needs its script, its API and its frames; see Stripe's
            # "Content Security Policy" guide. Card data then never touches our server.
            policy = (
                policy.replace(
                    "script-src 'self'", "script-src 'self' https://js.stripe.com"
                ).replace("connect-src 'self'", "connect-src 'self' https://api.stripe.com")
                + "; frame-src https://js.stripe.com https://hooks.stripe.com"
            )
        response["Content-Security-Policy"] = policy
        return response
