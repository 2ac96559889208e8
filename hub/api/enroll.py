"""`POST /api/v1/enroll`: a serialized EnrollRequest in, a serialized EnrollResponse out (see agent.proto)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from google.protobuf.message import DecodeError

from hub.api.deps import Services
from hub.errors import BadInput
from protos.edgeport.v1 import agent_pb2

router = APIRouter(prefix="/api/v1", tags=["devices"])

PROTOBUF = "application/x-protobuf"
MAX_ENROLL_BYTES = 64 * 1024  # a CSR and an inventory; anything bigger is not an enrollment


@router.post(
    "/enroll",
    summary="Exchange a one-time enrollment token and a CSR for a device certificate",
    response_class=Response,
    responses={200: {"content": {PROTOBUF: {}}}},
)
async def enroll(request: Request, services: Services) -> Response:
    """Body: EnrollRequest (protobuf). Errors are the usual JSON error body with 400/401."""
    body = await request.body()
    if len(body) > MAX_ENROLL_BYTES:
        raise BadInput(f"enrollment request is {len(body)} bytes; the limit is {MAX_ENROLL_BYTES}")
    try:
        enroll_request = agent_pb2.EnrollRequest.FromString(body)
    except DecodeError:
        raise BadInput("enrollment body is not a serialized edgeport.v1.EnrollRequest") from None
    if not enroll_request.token_id or not enroll_request.csr_pem:
        raise BadInput("enrollment request needs token_id and csr_pem")
    response = services.fleet.enroll(enroll_request)
    response.pull_token = services.access.device_pull_token(response.device_id)
    return Response(response.SerializeToString(), media_type=PROTOBUF)
