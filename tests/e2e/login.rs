//! Federated login against a real OpenID Connect provider (`oidc-provider`):
//! the device-code style flow, identities, refresh rotation, replayed
//! callbacks, loopback redirects and a provider that refuses the service.

use lattice_tests::{browser_login, LoginPlatform};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn device_code_login_yields_tokens_of_the_provider_identity() {
    let Some(platform) = LoginPlatform::start("device_code_login").await else {
        return;
    };
    let service = &platform.service;
    let login = service.start_login(None).await;
    assert!(
        login.authorize_url.starts_with(&platform.provider.issuer),
        "{}",
        login.authorize_url
    );

    let pending = service.redeem(&login.device_code).await;
    pending.assert_error(400, "authorization_pending");

    let browser = browser_login(&login.authorize_url, "alice").await.unwrap();
    let callback = service.get_url(browser.callback_url.as_str(), None).await;
    assert_eq!(callback.status, StatusCode::OK, "{callback:?}");
    let page = callback.body.as_str().unwrap_or_default();
    assert!(page.contains("Login complete"), "{page}");

    let tokens = service.redeem(&login.device_code).await;
    assert_eq!(tokens.status, StatusCode::OK, "{tokens:?}");
    assert_eq!(tokens.body["token_type"], "Bearer");
    assert!(tokens.body["refresh_token"].is_string(), "{tokens:?}");

    let whoami = service.whoami(tokens.str("access_token")).await;
    assert_eq!(whoami.status, StatusCode::OK, "{whoami:?}");
    let identity = &whoami.body["identity"];
    assert_eq!(
        identity["identity_provider"],
        json!(platform.provider.issuer)
    );
    assert_eq!(identity["subject"], "alice");

    let again = service.redeem(&login.device_code).await;
    again.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn logins_map_to_one_identity_per_subject() {
    let Some(platform) = LoginPlatform::start("logins_map_to_one_identity").await else {
        return;
    };
    let service = &platform.service;
    let mut identity_of = Vec::new();
    for user in ["alice", "alice", "bob"] {
        let tokens = service.login_as(user).await;
        let whoami = service.whoami(&tokens.access_token).await;
        assert_eq!(whoami.status, StatusCode::OK, "{whoami:?}");
        assert_eq!(whoami.body["identity"]["subject"], user);
        identity_of.push(whoami.body["identity"]["id"].clone());
    }
    assert_eq!(
        identity_of[0], identity_of[1],
        "alice twice is one identity"
    );
    assert_ne!(identity_of[0], identity_of[2], "bob is someone else");
}

#[tokio::test]
async fn refresh_tokens_of_a_login_rotate_and_replay_revokes_the_login() {
    let Some(platform) = LoginPlatform::start("refresh_rotation").await else {
        return;
    };
    let service = &platform.service;
    let first = service.login_as("alice").await;
    let old_refresh = first.refresh_token.clone().expect("a refresh token");

    let rotated = service.refresh(&old_refresh).await;
    assert_eq!(rotated.status, StatusCode::OK, "{rotated:?}");
    let new_access = rotated.str("access_token");
    assert_ne!(rotated.str("refresh_token"), old_refresh);
    let whoami = service.whoami(new_access).await;
    assert_eq!(whoami.status, StatusCode::OK, "{whoami:?}");
    assert_eq!(whoami.body["identity"]["subject"], "alice");

    service
        .refresh(&old_refresh)
        .await
        .assert_error(401, "unauthorized");
    service
        .whoami(new_access)
        .await
        .assert_error(401, "unauthorized");
    service
        .whoami(&first.access_token)
        .await
        .assert_error(401, "unauthorized");
    service
        .refresh(rotated.str("refresh_token"))
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn revoking_the_refresh_token_of_a_login_ends_it() {
    let Some(platform) = LoginPlatform::start("revoke_login").await else {
        return;
    };
    let service = &platform.service;
    let tokens = service.login_as("alice").await;
    let refresh_token = tokens.refresh_token.expect("a refresh token");
    let revoked = service
        .post_json("/v1/auth/revoke", None, &json!({ "token": refresh_token }))
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{revoked:?}");
    service
        .whoami(&tokens.access_token)
        .await
        .assert_error(401, "unauthorized");
    service
        .refresh(&refresh_token)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn a_replayed_callback_is_refused() {
    let Some(platform) = LoginPlatform::start("replayed_callback").await else {
        return;
    };
    let service = &platform.service;
    let login = service.start_login(None).await;
    let browser = browser_login(&login.authorize_url, "alice").await.unwrap();
    let first = service.get_url(browser.callback_url.as_str(), None).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");

    let replay = service.get_url(browser.callback_url.as_str(), None).await;
    let message = replay.assert_error(400, "bad_request");
    assert!(message.contains("replayed"), "{message}");

    // The first callback's login still redeems once.
    let tokens = service.redeem(&login.device_code).await;
    assert_eq!(tokens.status, StatusCode::OK, "{tokens:?}");
}

#[tokio::test]
async fn a_loopback_redirect_uri_receives_the_login_id_and_status() {
    let Some(platform) = LoginPlatform::start("loopback_redirect").await else {
        return;
    };
    let service = &platform.service;
    let loopback = format!("http://127.0.0.1:{}/cb", lattice_tests::free_port());
    let login = service.start_login(Some(&loopback)).await;
    let browser = browser_login(&login.authorize_url, "alice").await.unwrap();
    let callback = service.get_url(browser.callback_url.as_str(), None).await;
    assert!(callback.status.is_redirection(), "{callback:?}");
    let target = url::Url::parse(callback.location.as_deref().expect("a Location")).unwrap();
    assert_eq!(
        target.origin(),
        url::Url::parse(&loopback).unwrap().origin()
    );
    assert_eq!(target.path(), "/cb");
    let query: Vec<(String, String)> = target.query_pairs().into_owned().collect();
    assert!(
        query.contains(&("login_id".into(), login.login_id.to_string())),
        "{target}"
    );
    assert!(query.contains(&("status".into(), "ok".into())), "{target}");

    let tokens = service.redeem(&login.device_code).await;
    assert_eq!(tokens.status, StatusCode::OK, "{tokens:?}");
}

#[tokio::test]
async fn a_non_loopback_redirect_uri_is_refused() {
    let Some(platform) = LoginPlatform::start("non_loopback_redirect").await else {
        return;
    };
    let answer = platform
        .service
        .post_json(
            "/v1/auth/login",
            None,
            &json!({ "redirect_uri": "https://evil.example.org/cb" }),
        )
        .await;
    let message = answer.assert_error(400, "bad_request");
    assert!(message.contains("redirect_uri"), "{message}");
}

#[tokio::test]
async fn a_client_secret_the_provider_refuses_ends_in_a_login_error() {
    let Some(platform) = LoginPlatform::start_with("refused_client_secret", |config| {
        if let Some(oidc) = &mut config.oidc {
            oidc.client_secret = "not-the-secret".into();
        }
    })
    .await
    else {
        return;
    };
    let service = &platform.service;
    let login = service.start_login(Some("http://127.0.0.1:9/cb")).await;
    let browser = browser_login(&login.authorize_url, "alice").await.unwrap();
    let callback = service.get_url(browser.callback_url.as_str(), None).await;
    assert!(callback.status.is_redirection(), "{callback:?}");
    let location = callback.location.unwrap_or_default();
    assert!(location.contains("status=error"), "{location}");

    let answer = service.redeem(&login.device_code).await;
    let message = answer.assert_error(401, "unauthorized");
    assert!(message.contains("login failed"), "{message}");
    assert!(message.contains("code exchange"), "{message}");
}

/// The `state` parameter of an authorization URL.
fn state_of(authorize_url: &str) -> String {
    url::Url::parse(authorize_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("authorize URL has a state")
}

#[tokio::test]
async fn a_provider_error_fails_the_login_with_an_escaped_page() {
    let Some(platform) = LoginPlatform::start("provider_error").await else {
        return;
    };
    let service = &platform.service;
    let login = service.start_login(None).await;
    let mut callback = service.endpoint("/v1/auth/oidc/callback");
    callback
        .query_pairs_mut()
        .append_pair("state", &state_of(&login.authorize_url))
        .append_pair("error", "access_denied")
        .append_pair("error_description", "<script>alert(1)</script>");
    let page = service.get_url(callback.as_str(), None).await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    let html = page.body.as_str().unwrap_or_default();
    assert!(html.contains("Login failed"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(!html.contains("<script>"), "{html}");

    let message = service
        .redeem(&login.device_code)
        .await
        .assert_error(401, "unauthorized");
    assert!(message.contains("access_denied"), "{message}");
}

#[tokio::test]
async fn a_code_injected_into_another_login_is_refused_by_pkce() {
    let Some(platform) = LoginPlatform::start("code_injection").await else {
        return;
    };
    let service = &platform.service;
    let victim = service.start_login(None).await;
    let attacker = service.start_login(None).await;
    let stolen = browser_login(&attacker.authorize_url, "mallory")
        .await
        .unwrap();
    let mut injected = stolen.callback_url.clone();
    let pairs: Vec<(String, String)> = stolen
        .callback_url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| match k.as_str() {
            "state" => (k, state_of(&victim.authorize_url)),
            _ => (k, v),
        })
        .collect();
    injected.query_pairs_mut().clear().extend_pairs(pairs);

    let page = service.get_url(injected.as_str(), None).await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    assert!(
        page.body
            .as_str()
            .unwrap_or_default()
            .contains("Login failed"),
        "{page:?}"
    );
    let message = service
        .redeem(&victim.device_code)
        .await
        .assert_error(401, "unauthorized");
    // Refused by the provider (PKCE verifier of another login), before any ID token.
    assert!(message.contains("refused the code exchange"), "{message}");
    assert!(message.contains("invalid_grant"), "{message}");
}

#[tokio::test]
async fn a_callback_without_state_is_400() {
    let Some(platform) = LoginPlatform::start("callback_without_state").await else {
        return;
    };
    let answer = platform
        .service
        .get("/v1/auth/oidc/callback?code=abc", None)
        .await;
    let message = answer.assert_error(400, "bad_request");
    assert!(message.contains("state"), "{message}");
}
