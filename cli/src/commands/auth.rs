//! `lattice login`, `lattice logout`, `lattice whoami`.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use lattice_client::{Client, Profile};
use lattice_protocol::api::{TokenRequest, WhoAmI};
use lattice_protocol::ErrorCode;
use tokio::sync::mpsc;

use crate::context::Context;

#[derive(Args, Debug)]
pub(crate) struct LoginArgs {
    /// Do not listen on a loopback port for the browser's return; just wait
    /// for the login to be completed (for a browser on another machine).
    #[arg(long)]
    no_local_server: bool,

    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    timeout: u64,
}

pub(crate) async fn login(ctx: &Context, args: LoginArgs) -> anyhow::Result<()> {
    let url = ctx.service_url()?;
    let anonymous = Client::new(&url, None)?;

    let (returned_tx, mut returned_rx) = mpsc::channel::<()>(1);
    let redirect_uri = if args.no_local_server {
        None
    } else {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("opening a loopback port for the login redirect")?;
        let port = listener.local_addr()?.port();
        tokio::spawn(serve_loopback(listener, returned_tx));
        Some(format!("http://127.0.0.1:{port}/callback"))
    };
    let started = anonymous.login_start(redirect_uri.clone()).await?;
    eprintln!(
        "Open this URL in a browser to log in to {url}:\n\n  {}\n",
        started.authorize_url
    );
    if redirect_uri.is_some() {
        eprintln!("Waiting for the browser to return here (or finish the login on any device)...");
    } else {
        eprintln!("Waiting for the login to be completed in the browser...");
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let interval = Duration::from_secs(started.interval.max(1) as u64);
    let tokens = loop {
        match anonymous
            .token(&TokenRequest::DeviceCode {
                device_code: started.device_code.clone(),
            })
            .await
        {
            Ok(tokens) => break tokens,
            Err(e) if e.code() == Some(ErrorCode::AuthorizationPending) => {}
            Err(e) => return Err(e.into()),
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "login timed out after {} s; run `lattice login` again",
                args.timeout
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = returned_rx.recv() => {}
        }
    };
    let profile = Profile {
        url: url.clone(),
        access_token: tokens.access_token.clone(),
        refresh_token: tokens.refresh_token.clone(),
        expires_at: Some(chrono::Utc::now() + chrono::Duration::seconds(tokens.expires_in)),
    };
    let path = ctx.profile_path()?;
    profile.save(&path)?;
    let me = anonymous
        .with_token(Some(tokens.access_token))
        .whoami()
        .await?;
    ctx.output.emit(&me, |me| {
        format!(
            "Logged in as {} ({}); tokens saved to {}",
            me.identity.username,
            me.identity.id,
            path.display()
        )
    })
}

/// Answers the browser's return to the loopback URL and wakes the poller.
async fn serve_loopback(listener: tokio::net::TcpListener, returned: mpsc::Sender<()>) {
    use axum::extract::{Query, State};
    use axum::response::Html;
    use std::collections::HashMap;

    async fn callback(
        State(returned): State<mpsc::Sender<()>>,
        Query(params): Query<HashMap<String, String>>,
    ) -> Html<&'static str> {
        let _ = returned.try_send(());
        if params.get("status").map(String::as_str) == Some("ok") {
            Html("<!doctype html><title>Lattice</title><p>Login complete. You can close this window and return to your terminal.</p>")
        } else {
            Html("<!doctype html><title>Lattice</title><p>Login failed; see your terminal.</p>")
        }
    }
    let app = axum::Router::new()
        .route("/callback", axum::routing::get(callback))
        .with_state(returned);
    let _ = axum::serve(listener, app).await;
}

pub(crate) async fn logout(ctx: &Context) -> anyhow::Result<()> {
    let path = ctx.profile_path()?;
    let Some(profile) = Profile::load(&path)? else {
        eprintln!("Not logged in (no profile at {}).", path.display());
        return Ok(());
    };
    let client = Client::new(&profile.url, None)?;
    let mut revoke_failed = None;
    for token in profile.refresh_token.iter().chain([&profile.access_token]) {
        if let Err(e) = client.revoke(token).await {
            revoke_failed = Some(e);
        }
    }
    Profile::delete(&path)?;
    match revoke_failed {
        None => eprintln!("Logged out: tokens revoked and {} deleted.", path.display()),
        Some(e) => eprintln!(
            "Deleted {}, but revoking the tokens at {} failed: {e}",
            path.display(),
            profile.url
        ),
    }
    Ok(())
}

pub(crate) async fn whoami(ctx: &Context) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let me: WhoAmI = client.whoami().await?;
    ctx.output.emit(&me, |me| {
        let mut text = format!(
            "{}\n  id:        {}\n  provider:  {}\n  scopes:    {}\n  expires:   {}",
            me.identity.username,
            me.identity.id,
            me.identity.identity_provider,
            lattice_protocol::api::Scope::join(&me.scopes),
            me.token_expires_at.to_rfc3339()
        );
        if let Some(email) = &me.identity.email {
            text.push_str(&format!("\n  email:     {email}"));
        }
        for linked in &me.linked_identities {
            text.push_str(&format!(
                "\n  linked:    {} ({}, {})",
                linked.username, linked.id, linked.identity_provider
            ));
        }
        text
    })
}
