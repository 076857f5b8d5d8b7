"""Every write of the realtime app, by sub-domain: notifications, webhooks, dispatch."""
