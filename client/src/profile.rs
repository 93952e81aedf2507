//! The saved login: service URL and tokens, in the user's config dir
//! (`$XDG_CONFIG_HOME/lattice/profile.json`, else `~/.config/lattice/...`),
//! readable by the owner only.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ClientError;

/// Where the CLI keeps its login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub url: String,
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl Profile {
    /// The Lattice config dir (honours `XDG_CONFIG_HOME`).
    pub fn config_dir() -> Result<PathBuf, ClientError> {
        if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir).join("lattice"));
        }
        dirs::config_dir()
            .map(|d| d.join("lattice"))
            .ok_or_else(|| {
                ClientError::NotConfigured(
                    "cannot find the user's config dir (set XDG_CONFIG_HOME)".into(),
                )
            })
    }

    /// `CONFIG_DIR/profile.json`.
    pub fn default_path() -> Result<PathBuf, ClientError> {
        Ok(Self::config_dir()?.join("profile.json"))
    }

    /// Reads a profile; `Ok(None)` if there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, ClientError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| ClientError::Profile {
                        path: path.display().to_string(),
                        detail: format!("not a valid profile ({e}); run `lattice login` again"),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ClientError::Profile {
                path: path.display().to_string(),
                detail: e.to_string(),
            }),
        }
    }

    /// Writes the profile atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        let err = |e: std::io::Error| ClientError::Profile {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp).map_err(err)?;
            file.write_all(&serde_json::to_vec_pretty(self).expect("profile serializes"))
                .map_err(err)?;
            file.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Deletes the profile; true if there was one.
    pub fn delete(path: &Path) -> Result<bool, ClientError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ClientError::Profile {
                path: path.display().to_string(),
                detail: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/profile.json");
        assert_eq!(Profile::load(&path).unwrap(), None);
        let profile = Profile {
            url: "http://127.0.0.1:8470".into(),
            access_token: "lat_at_x".into(),
            refresh_token: Some("lat_rt_y".into()),
            expires_at: None,
        };
        profile.save(&path).unwrap();
        assert_eq!(Profile::load(&path).unwrap(), Some(profile));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(Profile::delete(&path).unwrap());
        assert!(!Profile::delete(&path).unwrap());
    }

    #[test]
    fn a_corrupt_profile_says_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = Profile::load(&path).unwrap_err().to_string();
        assert!(err.contains("lattice login"), "{err}");
    }
}
