"""Sharing functions and endpoints through the SDK's Client, against a
real `lattice dev` (one identity: the grants round-trip, refusals say why)."""

from __future__ import annotations

import pytest

from lattice import Client
from lattice.errors import APIError


def test_functions_and_endpoints_are_shared_and_unshared(endpoint):
    client = Client()
    function_id = client.register_function(lambda: 42)
    assert client.function_grants(function_id) == []
    shared = client.share_function(function_id, "all_authenticated_users", public=True)
    assert sorted(shared) == ["all_authenticated_users", "public"]
    client.unshare_function(function_id, "public")
    assert client.function_grants(function_id) == ["all_authenticated_users"]

    assert client.share_endpoint(endpoint, "all_authenticated_users") == ["all_authenticated_users"]
    assert client.endpoint_grants(endpoint) == ["all_authenticated_users"]
    client.unshare_endpoint(endpoint, "all_authenticated_users")
    assert client.endpoint_grants(endpoint) == []


def test_bad_grants_are_refused_with_the_reason(endpoint):
    client = Client()
    function_id = client.register_function(lambda: 1)
    with pytest.raises(APIError) as refused:
        client.share_function(function_id, "user:bob")
    assert refused.value.status == 400 and "identity:ID" in str(refused.value)
    with pytest.raises(APIError) as public_endpoint:
        client.share_endpoint(endpoint, "public")
    assert public_endpoint.value.status == 400
    with pytest.raises(ValueError):
        client.share_function(function_id)
    with pytest.raises(APIError) as missing:
        client.unshare_function(function_id, "all_authenticated_users")
    assert missing.value.status == 404
