"""Liveness: GET /isAlive."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

bp = Blueprint("system", __name__)


@bp.get("/isAlive")
def is_alive() -> Response:
    """Song's ping: the JSON boolean ``true``."""
    return jsonify(True)
