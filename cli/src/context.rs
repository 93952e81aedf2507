//! What every command knows: output settings and how to reach the service
//! (`--url`/`LATTICE_URL`, `LATTICE_TOKEN`, else the saved profile).

use std::path::PathBuf;

use lattice_client::{Client, ClientError, Profile};
use lattice_protocol::api::TokenRequest;

use crate::output::Output;

pub(crate) struct Context {
    pub(crate) output: Output,
    pub(crate) url: Option<String>,
    /// `--ca-file` / `LATTICE_CA_FILE`, already installed as the process's
    /// trust; a config file's `ca_file` applies only without it.
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) token: Option<String>,
}

impl Context {
    /// Installs a config file's `ca_file` unless the flag or variable named
    /// one (flags and environment win over files, as everywhere).
    pub(crate) fn apply_file_ca(&self, file_ca: Option<&std::path::Path>) -> anyhow::Result<()> {
        if let (None, Some(path)) = (&self.ca_file, file_ca) {
            lattice_tls::install_process_trust(Some(path))
                .map_err(|e| anyhow::anyhow!("ca_file in the config file: {e}"))?;
        }
        Ok(())
    }

    pub(crate) fn profile_path(&self) -> anyhow::Result<PathBuf> {
        Ok(Profile::default_path()?)
    }

    /// The service URL, without requiring a token.
    pub(crate) fn service_url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        if let Some(profile) = Profile::load(&self.profile_path()?)? {
            return Ok(profile.url);
        }
        Ok(format!(
            "http://{}",
            lattice_service::config::DEFAULT_LISTEN
        ))
    }

    /// A client with a token: `LATTICE_TOKEN`, else the profile's (refreshed
    /// first if it has expired and a refresh token is saved).
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        let path = self.profile_path()?;
        let profile = Profile::load(&path)?;
        let url = match (&self.url, &profile) {
            (Some(url), _) => url.clone(),
            (None, Some(p)) => p.url.clone(),
            (None, None) => format!("http://{}", lattice_service::config::DEFAULT_LISTEN),
        };
        if let Some(token) = &self.token {
            return Ok(Client::new(&url, Some(token.clone()))?);
        }
        let Some(mut profile) = profile else {
            return Err(ClientError::NotConfigured(format!(
                "not logged in: run `lattice login` (or `lattice dev`), or set LATTICE_TOKEN (no profile at {})",
                path.display()
            ))
            .into());
        };
        let expired = profile
            .expires_at
            .is_some_and(|at| at <= chrono::Utc::now() + chrono::Duration::seconds(30));
        if expired {
            if let Some(refresh_token) = profile.refresh_token.clone() {
                let anonymous = Client::new(&profile.url, None)?;
                let fresh = anonymous
                    .token(&TokenRequest::RefreshToken { refresh_token })
                    .await?;
                profile.access_token = fresh.access_token;
                profile.refresh_token = fresh.refresh_token;
                profile.expires_at =
                    Some(chrono::Utc::now() + chrono::Duration::seconds(fresh.expires_in));
                profile.save(&path)?;
                tracing::debug!("refreshed the saved access token");
            }
        }
        Ok(Client::new(&url, Some(profile.access_token))?)
    }
}
