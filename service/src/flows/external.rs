//! Calling external action providers over HTTP with the Globus
//! action-provider contract: `POST {url}/run` (falling back to the newer
//! `POST {url}/actions` when `/run` is not there), `GET
//! {url}/{id}/status` (or `/actions/{id}`), `POST .../cancel` and
//! `.../release`. A 4xx refusal is permanent (the step raises
//! `ActionUnableToRun`); a 5xx, a timeout or a refused connection is
//! transient and retried by the driver with backoff.
//!
//! No Lattice token is ever sent to an external provider: a provider
//! that needs the caller's identity gets it from the request's
//! `monitor_by`/`manage_by` principals, not from a credential it could
//! replay against Lattice.

use std::time::Duration;

use lattice_protocol::flows::{ActionRequest, ActionStatus};
use reqwest::StatusCode;

/// How long one HTTP call to a provider may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest provider answer read, in bytes.
const MAX_ANSWER: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ExternalError {
    /// The provider refused (4xx) or answered nonsense: retrying will not help.
    #[error("{0}")]
    Refused(String),
    /// The provider could not be reached or failed (5xx): try again later.
    #[error("{0}")]
    Transient(String),
}

/// Which form of the contract a provider answered to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Api {
    /// `/run`, `/{id}/status`, `/{id}/cancel`, `/{id}/release`.
    Classic,
    /// `/actions`, `/actions/{id}`, `/actions/{id}/cancel`, `/actions/{id}/release`.
    Actions,
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the HTTP client for action providers builds")
}

fn base(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// Checks that an `ActionUrl` is an absolute http(s) URL on an allowed
/// host (`allowed` empty: any host).
pub(crate) fn check_url(url: &str, allowed: &[String]) -> Result<(), String> {
    let parsed =
        url::Url::parse(url).map_err(|e| format!("ActionUrl `{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "ActionUrl `{url}`: only http and https providers can be called"
        ));
    }
    let host = parsed.host_str().unwrap_or_default();
    if !allowed.is_empty()
        && !allowed.iter().any(|a| match a.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == a,
        })
    {
        return Err(format!(
            "ActionUrl `{url}`: host `{host}` is not among this service's allowed action hosts"
        ));
    }
    Ok(())
}

async fn answer(response: reqwest::Response, what: &str) -> Result<ActionStatus, ExternalError> {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| ExternalError::Transient(format!("{what}: reading the answer: {e}")))?;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ANSWER)]).into_owned();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(ExternalError::Transient(format!(
            "{what}: the provider answered {status}: {}",
            snippet(&text)
        )));
    }
    if !status.is_success() {
        return Err(ExternalError::Refused(format!(
            "{what}: the provider answered {status}: {}",
            snippet(&text)
        )));
    }
    if body.len() > MAX_ANSWER {
        return Err(ExternalError::Refused(format!(
            "{what}: the provider's answer is over {MAX_ANSWER} bytes"
        )));
    }
    serde_json::from_slice(&body).map_err(|e| {
        ExternalError::Refused(format!(
            "{what}: the provider's answer is not an action status ({e}): {}",
            snippet(&text)
        ))
    })
}

fn snippet(text: &str) -> String {
    let t: String = text.chars().take(300).collect();
    if t.len() < text.len() {
        format!("{t}...")
    } else {
        t
    }
}

fn transient(what: &str, e: reqwest::Error) -> ExternalError {
    ExternalError::Transient(format!("{what}: {e}"))
}

/// Starts an action; the same request id twice starts one action (the
/// provider's promise, which the contract requires).
pub(crate) async fn run(
    http: &reqwest::Client,
    url: &str,
    request: &ActionRequest,
) -> Result<(Api, ActionStatus), ExternalError> {
    let what = format!("starting the action at {url}");
    let response = http
        .post(format!("{}/run", base(url)))
        .json(request)
        .send()
        .await
        .map_err(|e| transient(&what, e))?;
    if matches!(
        response.status(),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
    ) {
        let response = http
            .post(format!("{}/actions", base(url)))
            .json(request)
            .send()
            .await
            .map_err(|e| transient(&what, e))?;
        return Ok((Api::Actions, answer(response, &what).await?));
    }
    Ok((Api::Classic, answer(response, &what).await?))
}

pub(crate) async fn status(
    http: &reqwest::Client,
    url: &str,
    api: Api,
    action_id: &str,
) -> Result<ActionStatus, ExternalError> {
    let what = format!("asking {url} about action {action_id}");
    let target = match api {
        Api::Classic => format!("{}/{action_id}/status", base(url)),
        Api::Actions => format!("{}/actions/{action_id}", base(url)),
    };
    let response = http
        .get(target)
        .send()
        .await
        .map_err(|e| transient(&what, e))?;
    answer(response, &what).await
}

/// `cancel` or `release`: best effort (the answer is only logged).
pub(crate) async fn finish(
    http: &reqwest::Client,
    url: &str,
    api: Api,
    action_id: &str,
    verb: &str,
) {
    let target = match api {
        Api::Classic => format!("{}/{action_id}/{verb}", base(url)),
        Api::Actions => format!("{}/actions/{action_id}/{verb}", base(url)),
    };
    match http.post(&target).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            tracing::info!(url = %target, status = %r.status(), "action provider refused {verb}")
        }
        Err(e) => {
            tracing::info!(url = %target, error = %e, "action provider unreachable for {verb}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_urls_are_checked_against_the_allowed_hosts() {
        assert!(check_url("https://ap.example.org/hello", &[]).is_ok());
        assert!(check_url("ftp://ap.example.org/x", &[])
            .unwrap_err()
            .contains("http"));
        assert!(check_url("not a url", &[])
            .unwrap_err()
            .contains("not a URL"));
        let allowed = vec!["*.example.org".to_owned(), "127.0.0.1".to_owned()];
        assert!(check_url("https://ap.example.org/x", &allowed).is_ok());
        assert!(check_url("http://127.0.0.1:9000/x", &allowed).is_ok());
        let e = check_url("http://169.254.169.254/latest", &allowed).unwrap_err();
        assert!(
            e.contains("169.254.169.254") && e.contains("allowed"),
            "{e}"
        );
        assert!(check_url("https://example.org.evil.com/", &allowed).is_err());
    }
}
