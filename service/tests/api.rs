//! The REST API through the router, without a socket: statuses, the
//! `{"code", "message"}` error shape, tokens, scopes, clients and identities.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::Duration;
use lattice_protocol::api::{Identity, Scope, TokenResponse};
use lattice_protocol::{IdentityId, LoginId};
use lattice_service::auth::oidc::LOGIN_TTL_SECS;
use lattice_service::auth::tokens::{self, Issue};
use lattice_service::store::LoginRecord;
use serde_json::{json, Value};

mod common;

use common::{assert_error, service, service_with, str_field, Answer, TestService};

// ---- harness extensions --------------------------------------------------

impl TestService {
    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.post_raw(
            path,
            None,
            Some("application/x-www-form-urlencoded"),
            encoded,
        )
        .await
    }

    async fn whoami(&self, token: &str) -> Answer {
        self.get("/v1/auth/whoami", Some(token)).await
    }

    /// A new token for `identity` with `scopes`, lifetime `access_ttl` and
    /// optionally a refresh token.
    async fn issue(
        &self,
        identity: &Identity,
        scopes: &[Scope],
        access_ttl: Duration,
        refresh_ttl: Option<Duration>,
    ) -> TokenResponse {
        tokens::issue(
            &self.state.store,
            Issue {
                identity_id: identity.id,
                scopes: scopes.to_vec(),
                access_ttl,
                refresh_ttl,
                family_id: None,
                client_id: None,
            },
        )
        .await
        .expect("issue a token")
    }

    /// A full-scope token for `identity` that lives an hour, with a refresh
    /// token that lives a day.
    async fn login(&self, identity: &Identity) -> TokenResponse {
        self.issue(
            identity,
            &Scope::ALL,
            Duration::hours(1),
            Some(Duration::days(1)),
        )
        .await
    }

    /// Registers a client with `scopes` (owned by a fresh user); returns the
    /// creation answer's body.
    async fn client(&self, scopes: &[&str]) -> Value {
        let (_, token) = self.user("client-owner").await;
        let answer = self
            .post_json(
                "/v1/clients",
                Some(&token),
                json!({"name": "ci bot", "scopes": scopes}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        answer.body
    }
}

// ---- service routes ------------------------------------------------------

#[tokio::test]
async fn health_answers_ok() {
    let service = service().await;
    let answer = service.get("/v1/health", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["status"], "ok");
    assert_eq!(answer.body["store"], "sqlite");
    assert!(answer.body["version"].is_string(), "{answer:?}");
}

#[tokio::test]
async fn openapi_document_lists_whoami_and_bearer_scheme() {
    let service = service().await;
    let answer = service.get("/v1/openapi.json", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let doc = &answer.body;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "{doc}"
    );
    assert!(doc["paths"]["/v1/auth/whoami"]["get"].is_object(), "{doc}");
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http", "{bearer}");
    assert_eq!(bearer["scheme"], "bearer", "{bearer}");
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    // The router and the document come from one list; this checks the
    // document's side: each operation reaches a handler (which may refuse
    // the anonymous, empty request), never the no-such-route fallback.
    let service = service().await;
    let doc = service.get("/v1/openapi.json", None).await.body;
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "0d6f6a3e-5c1b-4b7e-9a62-3f1c2d4e5f60"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            let Ok(method) = method.to_uppercase().parse::<axum::http::Method>() else {
                continue;
            };
            if !["GET", "POST", "DELETE", "PUT", "PATCH"].contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            let request = Request::builder()
                .method(method.clone())
                .uri(&concrete)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let answer = service.send(request).await;
            assert_ne!(
                answer.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            let message = answer.body["message"].as_str().unwrap_or_default();
            assert!(
                !message.contains("no such route"),
                "{method} {path} is documented but not served: {answer:?}"
            );
        }
    }
    assert!(operations >= 40, "only {operations} operations documented");
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let service = service().await;
    for path in ["/v1/no-such-route", "/elsewhere"] {
        let answer = service.get(path, None).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    }
}

#[tokio::test]
async fn wrong_method_is_405_json() {
    let service = service().await;
    let answer = service.get("/v1/auth/token", None).await;
    assert_error(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let answer = service.post_json("/v1/health", None, json!({})).await;
    assert_error(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

// ---- whoami and token validity -------------------------------------------

#[tokio::test]
async fn whoami_without_token_is_401() {
    let service = service().await;
    let answer = service.get("/v1/auth/whoami", None).await;
    let message = assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(message.contains("Bearer"), "{message}");
}

#[tokio::test]
async fn whoami_with_non_bearer_authorization_is_401() {
    let service = service().await;
    let req = Request::get("/v1/auth/whoami")
        .header(header::AUTHORIZATION, "Basic YWxpY2U6eA==")
        .body(Body::empty())
        .unwrap();
    let answer = service.send(req).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn whoami_with_unknown_token_is_401() {
    let service = service().await;
    let answer = service.whoami("lat_at_not-a-real-token").await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn whoami_with_expired_token_is_401() {
    let service = service().await;
    let (alice, _) = service.user("alice").await;
    let expired = service
        .issue(&alice, &Scope::ALL, Duration::seconds(-1), None)
        .await;
    let answer = service.whoami(&expired.access_token).await;
    let message = assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test]
async fn whoami_with_revoked_token_is_401() {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let answer = service
        .post_json("/v1/auth/revoke", None, json!({ "token": token }))
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{answer:?}");
    let answer = service.whoami(&token).await;
    let message = assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(message.contains("revoked"), "{message}");
}

#[tokio::test]
async fn revoking_an_unknown_token_is_accepted() {
    let service = service().await;
    let answer = service
        .post_json(
            "/v1/auth/revoke",
            None,
            json!({ "token": "lat_at_unknown" }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{answer:?}");
}

#[tokio::test]
async fn refresh_token_as_bearer_is_401() {
    let service = service().await;
    let (alice, _) = service.user("alice").await;
    let pair = service.login(&alice).await;
    let refresh = pair.refresh_token.expect("a refresh token");
    let answer = service.whoami(&refresh).await;
    let message = assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(message.contains("refresh"), "{message}");
}

#[tokio::test]
async fn whoami_with_valid_token_shows_the_identity() {
    let service = service().await;
    let (alice, token) = service.user("alice").await;
    let answer = service.whoami(&token).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let body = &answer.body;
    assert_eq!(body["identity"]["id"], json!(alice.id), "{body}");
    assert_eq!(body["identity"]["username"], "alice");
    assert_eq!(body["identity"]["identity_provider"], "local");
    assert_eq!(body["linked_identities"], json!([]));
    assert_eq!(body["scopes"], json!(["compute", "transfer", "manage"]));
    assert!(body["token_expires_at"].is_string(), "{body}");
}

#[tokio::test]
async fn missing_scope_is_403() {
    let service = service().await;
    let (alice, _) = service.user("alice").await;
    let compute_only = service
        .issue(&alice, &[Scope::Compute], Duration::hours(1), None)
        .await;
    let answer = service
        .post_json(
            "/v1/clients",
            Some(&compute_only.access_token),
            json!({"name": "bot"}),
        )
        .await;
    let message = assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
    assert!(message.contains("manage"), "{message}");
}

// ---- request bodies ------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_400() {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let answer = service
        .post_raw(
            "/v1/clients",
            Some(&token),
            Some("application/json"),
            "{\"name\": ",
        )
        .await;
    let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("JSON"), "{message}");
}

#[tokio::test]
async fn wrong_field_type_is_400_naming_the_field() {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let answer = service
        .post_json("/v1/clients", Some(&token), json!({"name": 5}))
        .await;
    let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("name"), "{message}");
}

#[tokio::test]
async fn missing_content_type_is_400() {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let answer = service
        .post_raw("/v1/clients", Some(&token), None, r#"{"name": "bot"}"#)
        .await;
    let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("Content-Type"), "{message}");
}

#[tokio::test]
async fn json_body_over_the_limit_is_413() {
    let service = service_with(|config| config.max_body_bytes = 2048).await;
    let (_, token) = service.user("alice").await;
    let answer = service
        .post_json(
            "/v1/clients",
            Some(&token),
            json!({"name": "x".repeat(4096)}),
        )
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn session_stream_frame_over_the_body_limit_is_refused_by_request_id() {
    let service = service_with(|config| config.max_body_bytes = 2048).await;
    let running = service.serve().await;
    let (_, token) = service.user("alice").await;
    let mut session = running
        .session(Some(&token))
        .await
        .expect("open the session stream");
    let submit = |request_id: u64, size: usize| {
        json!({"type": "submit", "request_id": request_id, "batch": {
            "function_id": uuid::Uuid::nil(), "endpoint_id": uuid::Uuid::nil(),
            "tasks": [{"text": "x".repeat(size)}]}})
    };
    session.send_json(submit(4, 3000)).await;
    match session.next().await {
        lattice_protocol::compute::SessionEvent::Error {
            request_id,
            code,
            message,
            ..
        } => {
            assert_eq!(request_id, Some(4));
            assert_eq!(code, lattice_protocol::ErrorCode::PayloadTooLarge);
            assert!(message.contains("over the limit of 2048"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // Over twice the limit the frame is not read: the connection closes.
    session.send_json(submit(5, 5000)).await;
    session.closed().await;
    service.cleanup().await;
}

#[tokio::test]
async fn form_body_over_the_limit_is_413() {
    let service = service_with(|config| config.max_body_bytes = 2048).await;
    let big = "x".repeat(4096);
    let answer = service
        .post_form(
            "/v1/auth/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &big)],
        )
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn unknown_grant_type_is_400() {
    let service = service().await;
    let answer = service
        .post_json("/v1/auth/token", None, json!({"grant_type": "password"}))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
}

// ---- client credentials --------------------------------------------------

#[tokio::test]
async fn creating_a_client_returns_its_secret_once() {
    let service = service().await;
    let created = service.client(&["compute"]).await;
    assert!(
        str_field(&created, "client_secret").starts_with("lat_cs_"),
        "{created}"
    );
    assert_eq!(created["name"], "ci bot");
    assert_eq!(created["scopes"], json!(["compute"]));
    assert!(created["client_id"].is_string() && created["identity_id"].is_string());
}

/// A client-credentials token, or the refusal.
async fn client_token(service: &TestService, client_id: &Value, secret: &Value) -> Answer {
    service
        .post_json(
            "/v1/auth/token",
            None,
            json!({
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
            }),
        )
        .await
}

#[tokio::test]
async fn client_credentials_as_json_give_a_token_of_the_client_identity() {
    let service = service().await;
    let created = service.client(&["compute", "transfer"]).await;
    let answer = client_token(&service, &created["client_id"], &created["client_secret"]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["scope"], "compute transfer");
    assert!(answer.body.get("refresh_token").is_none(), "{answer:?}");
    let whoami = service
        .whoami(str_field(&answer.body, "access_token"))
        .await;
    assert_eq!(whoami.status, StatusCode::OK, "{whoami:?}");
    assert_eq!(whoami.body["identity"]["id"], created["identity_id"]);
    assert_eq!(whoami.body["identity"]["identity_provider"], "client");
}

#[tokio::test]
async fn client_credentials_as_form_give_a_token_of_the_client_identity() {
    let service = service().await;
    let created = service.client(&["compute", "transfer"]).await;
    let answer = service
        .post_form(
            "/v1/auth/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", str_field(&created, "client_id")),
                ("client_secret", str_field(&created, "client_secret")),
                ("scope", "compute"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["scope"], "compute");
    let whoami = service
        .whoami(str_field(&answer.body, "access_token"))
        .await;
    assert_eq!(whoami.status, StatusCode::OK, "{whoami:?}");
    assert_eq!(whoami.body["identity"]["id"], created["identity_id"]);
    assert_eq!(whoami.body["scopes"], json!(["compute"]));
}

#[tokio::test]
async fn client_credentials_with_wrong_secret_are_401() {
    let service = service().await;
    let created = service.client(&["compute"]).await;
    let answer = client_token(&service, &created["client_id"], &json!("lat_cs_wrong")).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn client_credentials_for_a_scope_the_client_lacks_are_403() {
    let service = service().await;
    let created = service.client(&["compute"]).await;
    let answer = service
        .post_json(
            "/v1/auth/token",
            None,
            json!({
                "grant_type": "client_credentials",
                "client_id": created["client_id"],
                "client_secret": created["client_secret"],
                "scope": "compute manage",
            }),
        )
        .await;
    let message = assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
    assert!(message.contains("manage"), "{message}");
}

#[tokio::test]
async fn a_rotated_secret_replaces_the_old_one_and_revokes_its_tokens() {
    let service = service().await;
    let (_, owner) = service.user("rotating-owner").await;
    let (_, stranger) = service.user("rotating-stranger").await;
    let created = service
        .post_json("/v1/clients", Some(&owner), json!({"name": "nightly"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let (id, old_secret) = (&created.body["client_id"], &created.body["client_secret"]);
    let old_token = client_token(&service, id, old_secret).await;
    let old_token = str_field(&old_token.body, "access_token").to_owned();
    let path = format!("/v1/clients/{}/secret", id.as_str().unwrap());

    // Only the owner may rotate; to anyone else the client does not exist.
    let refused = service.post_json(&path, Some(&stranger), json!({})).await;
    assert_error(&refused, StatusCode::NOT_FOUND, "not_found");
    let rotated = service.post_json(&path, Some(&owner), json!({})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{rotated:?}");
    let new_secret = &rotated.body["client_secret"];
    assert_ne!(new_secret, old_secret);

    assert_eq!(
        service.whoami(&old_token).await.status,
        StatusCode::UNAUTHORIZED
    );
    let with_old = client_token(&service, id, old_secret).await;
    assert_error(&with_old, StatusCode::UNAUTHORIZED, "unauthorized");
    let with_new = client_token(&service, id, new_secret).await;
    assert_eq!(with_new.status, StatusCode::OK, "{with_new:?}");
    let new_token = str_field(&with_new.body, "access_token");
    assert_eq!(service.whoami(new_token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_deleted_client_loses_its_secret_and_tokens() {
    let service = service().await;
    let (_, owner) = service.user("deleting-owner").await;
    let (_, stranger) = service.user("deleting-stranger").await;
    let created = service
        .post_json("/v1/clients", Some(&owner), json!({"name": "leaked"}))
        .await;
    let (id, secret) = (&created.body["client_id"], &created.body["client_secret"]);
    let token = client_token(&service, id, secret).await;
    let token = str_field(&token.body, "access_token").to_owned();
    let path = format!("/v1/clients/{}", id.as_str().unwrap());

    let refused = service.delete(&path, Some(&stranger)).await;
    assert_error(&refused, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(service.whoami(&token).await.status, StatusCode::OK);

    let deleted = service.delete(&path, Some(&owner)).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    assert_eq!(
        service.whoami(&token).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = client_token(&service, id, secret).await;
    assert_error(&again, StatusCode::UNAUTHORIZED, "unauthorized");
    let listed = service.get("/v1/clients", Some(&owner)).await;
    assert_eq!(listed.body, json!([]));
    // Gone, and an id that never was, alike.
    assert_error(
        &service.delete(&path, Some(&owner)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &service.delete("/v1/clients/not-an-id", Some(&owner)).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
}

// ---- refresh rotation ----------------------------------------------------

async fn refresh(service: &TestService, refresh_token: &str) -> Answer {
    service
        .post_json(
            "/v1/auth/token",
            None,
            json!({"grant_type": "refresh_token", "refresh_token": refresh_token}),
        )
        .await
}

#[tokio::test]
async fn refresh_token_rotates_to_a_new_pair() {
    let service = service().await;
    let (alice, _) = service.user("alice").await;
    let first = service.login(&alice).await;
    let old_refresh = first.refresh_token.expect("a refresh token");
    let answer = refresh(&service, &old_refresh).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let new_access = str_field(&answer.body, "access_token");
    let new_refresh = str_field(&answer.body, "refresh_token");
    assert_ne!(new_access, first.access_token);
    assert_ne!(new_refresh, old_refresh);
    assert_eq!(answer.body["scope"], "compute transfer manage");
    let whoami = service.whoami(new_access).await;
    assert_eq!(whoami.status, StatusCode::OK, "{whoami:?}");
    assert_eq!(whoami.body["identity"]["id"], json!(alice.id));
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_family() {
    let service = service().await;
    let (alice, _) = service.user("alice").await;
    let first = service.login(&alice).await;
    let old_refresh = first.refresh_token.expect("a refresh token");
    let rotated = refresh(&service, &old_refresh).await;
    assert_eq!(rotated.status, StatusCode::OK, "{rotated:?}");

    let replay = refresh(&service, &old_refresh).await;
    assert_error(&replay, StatusCode::UNAUTHORIZED, "unauthorized");

    let new_access = str_field(&rotated.body, "access_token");
    assert_error(
        &service.whoami(new_access).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        &service.whoami(&first.access_token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let new_refresh = str_field(&rotated.body, "refresh_token");
    assert_error(
        &refresh(&service, new_refresh).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_the_login() {
    let service = service().await;
    let (alice, _) = service.user("alice").await;
    let pair = service.login(&alice).await;
    let refresh_token = pair.refresh_token.expect("a refresh token");
    let answer = service
        .post_form("/v1/auth/revoke", &[("token", &refresh_token)])
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{answer:?}");
    assert_error(
        &service.whoami(&pair.access_token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        &refresh(&service, &refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
}

#[tokio::test]
async fn unknown_refresh_token_is_401() {
    let service = service().await;
    let answer = refresh(&service, "lat_rt_unknown").await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
}

// ---- identities ----------------------------------------------------------

#[tokio::test]
async fn linking_an_identity_shows_in_whoami() {
    let service = service().await;
    let (alice, alice_token) = service.user("alice").await;
    let (laptop, laptop_token) = service.user("alice-laptop").await;
    let answer = service
        .post_json(
            "/v1/identities/link",
            Some(&alice_token),
            json!({"other_token": laptop_token}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["linked_identities"][0]["id"], json!(laptop.id));

    let whoami = service.whoami(&alice_token).await;
    assert_eq!(whoami.status, StatusCode::OK, "{whoami:?}");
    let linked = whoami.body["linked_identities"].as_array().unwrap();
    assert_eq!(linked.len(), 1, "{whoami:?}");
    assert_eq!(linked[0]["id"], json!(laptop.id));

    let whoami = service.whoami(&laptop_token).await;
    let linked = whoami.body["linked_identities"].as_array().unwrap();
    assert_eq!(linked.len(), 1, "{whoami:?}");
    assert_eq!(linked[0]["id"], json!(alice.id));
}

#[tokio::test]
async fn linking_with_an_invalid_other_token_is_400() {
    let service = service().await;
    let (_, alice_token) = service.user("alice").await;
    let answer = service
        .post_json(
            "/v1/identities/link",
            Some(&alice_token),
            json!({"other_token": "lat_at_unknown"}),
        )
        .await;
    let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("other_token"), "{message}");
}

#[tokio::test]
async fn identity_by_id_is_shown() {
    let service = service().await;
    let (alice, token) = service.user("alice").await;
    let answer = service
        .get(&format!("/v1/identities/{}", alice.id), Some(&token))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["id"], json!(alice.id));
    assert_eq!(answer.body["username"], "alice");
}

#[tokio::test]
async fn identity_with_malformed_id_is_400() {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let answer = service.get("/v1/identities/not-a-uuid", Some(&token)).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn unknown_identity_is_404() {
    let service = service().await;
    let (_, token) = service.user("alice").await;
    let unknown = IdentityId::new();
    let answer = service
        .get(&format!("/v1/identities/{unknown}"), Some(&token))
        .await;
    let message = assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains(&unknown.to_string()), "{message}");
}

// ---- federated login without a provider ----------------------------------

#[tokio::test]
async fn login_without_a_configured_provider_is_404() {
    let service = service().await;
    let answer = service.post_json("/v1/auth/login", None, json!({})).await;
    let message = assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("oidc"), "{message}");
}

#[tokio::test]
async fn login_callback_with_unknown_state_is_400() {
    let service = service().await;
    let answer = service
        .get("/v1/auth/oidc/callback?state=nope&code=x", None)
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
}

/// Redeems `device_code` for a token, or the refusal.
async fn redeem(service: &TestService, device_code: &str) -> Answer {
    service
        .post_json(
            "/v1/auth/token",
            None,
            json!({"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": device_code}),
        )
        .await
}

#[tokio::test]
async fn device_code_unknown_is_401() {
    let service = service().await;
    let answer = redeem(&service, "lat_dc_x").await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
}

/// A login record as `POST /v1/auth/login` would store it, with device code
/// `device_code`, started `age` ago (logins live `LOGIN_TTL_SECS`).
async fn stored_login(service: &TestService, device_code: &str, age: Duration) -> LoginId {
    let created_at = chrono::Utc::now() - age;
    let login = LoginRecord {
        id: LoginId::new(),
        csrf_state: lattice_service::auth::new_secret("state_"),
        nonce: "nonce".into(),
        pkce_verifier: "verifier".into(),
        redirect_uri: None,
        device_code_hash: lattice_service::auth::hash_secret(device_code),
        created_at,
        expires_at: created_at + Duration::seconds(LOGIN_TTL_SECS),
        callback_at: None,
        identity_id: None,
        error: None,
        redeemed_at: None,
    };
    service
        .state
        .store
        .insert_login(&login)
        .await
        .expect("insert login");
    login.id
}

/// Completes the stored `login` as its provider's callback would, with `outcome`.
async fn finish_login(service: &TestService, login: LoginId, outcome: Result<IdentityId, String>) {
    let store = &service.state.store;
    assert!(store
        .claim_login_callback(login, chrono::Utc::now())
        .await
        .unwrap());
    store.finish_login(login, outcome).await.unwrap();
}

#[tokio::test]
async fn device_code_of_an_unfinished_login_is_pending() {
    let service = service().await;
    stored_login(&service, "lat_dc_pending", Duration::zero()).await;
    let answer = redeem(&service, "lat_dc_pending").await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "authorization_pending");
}

#[tokio::test]
async fn device_code_of_an_expired_unfinished_login_is_401() {
    let service = service().await;
    stored_login(
        &service,
        "lat_dc_old",
        Duration::seconds(LOGIN_TTL_SECS + 60),
    )
    .await;
    let answer = redeem(&service, "lat_dc_old").await;
    let message = assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test]
async fn device_code_of_a_completed_login_redeems_once() {
    let service = service().await;
    let (alice, _) = service.user("alice").await;
    let login = stored_login(&service, "lat_dc_done", Duration::zero()).await;
    finish_login(&service, login, Ok(alice.id)).await;

    let answer = redeem(&service, "lat_dc_done").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert!(answer.body["refresh_token"].is_string(), "{answer:?}");
    let whoami = service
        .whoami(str_field(&answer.body, "access_token"))
        .await;
    assert_eq!(whoami.body["identity"]["id"], json!(alice.id), "{whoami:?}");

    let again = redeem(&service, "lat_dc_done").await;
    assert_error(&again, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn device_code_of_a_failed_login_is_401_with_the_reason() {
    let service = service().await;
    let login = stored_login(&service, "lat_dc_failed", Duration::zero()).await;
    finish_login(
        &service,
        login,
        Err("the identity provider reported: access_denied".into()),
    )
    .await;
    let answer = redeem(&service, "lat_dc_failed").await;
    let message = assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(message.contains("access_denied"), "{message}");
}

/// The device code is valid for `expires_in` seconds (LoginStartResponse):
/// a completed login must not stay redeemable after that.
#[tokio::test]
async fn device_code_of_a_completed_login_expires() {
    let service = service().await;
    let (alice, _) = service.user("alice").await;
    let login = stored_login(
        &service,
        "lat_dc_stale",
        Duration::seconds(LOGIN_TTL_SECS + 60),
    )
    .await;
    finish_login(&service, login, Ok(alice.id)).await;
    let answer = redeem(&service, "lat_dc_stale").await;
    let message = assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test]
async fn expired_refresh_token_is_401() {
    let service = service().await;
    let (alice, _) = service.user("alice").await;
    let pair = service
        .issue(
            &alice,
            &Scope::ALL,
            Duration::hours(1),
            Some(Duration::seconds(-1)),
        )
        .await;
    let answer = refresh(&service, &pair.refresh_token.expect("a refresh token")).await;
    let message = assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test]
async fn loopback_and_private_webhooks_are_refused_by_default() {
    // The production default: no private targets.
    let service = service().await;
    let (_, token) = service.user("hooks").await;
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://localhost:9000/hook",
        "https://10.0.0.7/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
    ] {
        let answer = service
            .post_json(
                "/v1/webhooks",
                Some(&token),
                json!({"url": url, "events": ["transfer.failed"]}),
            )
            .await;
        let message = assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
        assert!(
            message.starts_with("url: ") && message.contains("loopback or private"),
            "{url}: {message}"
        );
    }
    let allowed = service_with(|config| config.notify.allow_private_webhooks = true).await;
    let (_, token) = allowed.user("hooks").await;
    let answer = allowed
        .post_json(
            "/v1/webhooks",
            Some(&token),
            json!({"url": "http://127.0.0.1:9000/hook", "events": ["transfer.failed"]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    assert!(
        str_field(&answer.body, "secret").starts_with("whsec_"),
        "{answer:?}"
    );
}
