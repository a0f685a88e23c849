"""Serve's process tuning is applied where a local cluster starts, without overriding the operator."""

from __future__ import annotations

from deployments.serve_env import SERVE_ENV_DEFAULTS, apply_serve_env_defaults


def test_fills_only_what_is_unset() -> None:
    env = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "PATH": "/bin"}
    applied = apply_serve_env_defaults(env)
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"  # the operator's choice stays
    assert "RAY_SERVE_ENABLE_DIRECT_INGRESS" not in applied
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" == applied["RAY_SERVE_THROUGHPUT_OPTIMIZED"]
    assert int(env["RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"]) >= 64 * 1024 * 1024


def test_can_be_turned_off() -> None:
    env = {"HYBRIDMEM_SERVE_DEFAULT_TUNING": "0"}
    assert apply_serve_env_defaults(env) == {}
    assert env == {"HYBRIDMEM_SERVE_DEFAULT_TUNING": "0"}


def test_direct_ingress_stays_off_by_default() -> None:
    # Direct ingress would leave nothing listening on the configured HTTP port without HAProxy.
    assert SERVE_ENV_DEFAULTS["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"
