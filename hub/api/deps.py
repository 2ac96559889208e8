"""Dependencies route modules share: the `HubServices` the app was created with."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from hub.services import HubServices


def get_services(request: Request) -> HubServices:
    """The app's `HubServices` (set by `create_app`)."""
    return request.app.state.services


Services = Annotated[HubServices, Depends(get_services)]
