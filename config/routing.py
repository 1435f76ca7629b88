"""Websocket routes of every app, gathered in one list."""

from dashboard.routing import websocket_urlpatterns as dashboard_ws
from playground.routing import websocket_urlpatterns as playground_ws

websocket_urlpatterns = [*dashboard_ws, *playground_ws]
