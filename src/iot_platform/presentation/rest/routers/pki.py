"""The device CA's public side: its chain and its CRL. Open to anyone, like any CRL
distribution point: devices and brokers fetch them before they hold any credential."""

from __future__ import annotations

from typing import Literal

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Response

from iot_platform.presentation.rest.deps import PkiDep

router = APIRouter(prefix="/api/pki", tags=["pki"])


@router.get("/ca", response_class=Response, responses={200: {"content": {"application/pem-certificate-chain": {}}}})
async def ca_chain(pki: PkiDep) -> Response:
    """The issuing CA and the root above it, PEM (what ``openssl verify -CAfile`` takes)."""
    return Response(pki.chain(), media_type="application/pem-certificate-chain")


@router.get("/crl", response_class=Response,
            responses={200: {"content": {"application/x-pem-file": {}, "application/pkix-crl": {}}}})
async def crl(pki: PkiDep, format: Literal["pem", "der"] = "pem") -> Response:
    """The current certificate revocation list, freshly signed; ``?format=der`` for DER."""
    current = await pki.crl()
    if format == "der":
        return Response(current.public_bytes(serialization.Encoding.DER), media_type="application/pkix-crl")
    return Response(current.public_bytes(serialization.Encoding.PEM), media_type="application/x-pem-file")
