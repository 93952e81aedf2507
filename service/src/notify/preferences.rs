//! Per-identity preferences: which event kinds arrive by email. (Which go
//! to webhooks is each webhook's own list.)

use chrono::Utc;
use lattice_protocol::notify::{EventKind, NotifyPreferences, PreferencesUpdate};
use lattice_protocol::IdentityId;

use super::error::{NotifyError, NotifyResult};
use crate::auth::Caller;
use crate::state::AppState;

/// The caller's preferences (the defaults until they set some).
pub(crate) async fn show(state: &AppState, caller: &Caller) -> NotifyResult<NotifyPreferences> {
    let email = email_kinds(state, caller.identity_id).await?;
    let address = state
        .store
        .identity(caller.identity_id)
        .await?
        .and_then(|i| i.email);
    Ok(NotifyPreferences {
        email,
        email_address: address,
        email_enabled: state.notify.mailer.is_some(),
    })
}

/// Replaces the caller's email kinds.
pub(crate) async fn update(
    state: &AppState,
    caller: &Caller,
    request: PreferencesUpdate,
) -> NotifyResult<NotifyPreferences> {
    let kinds = parse_kinds("email", &request.email)?;
    state
        .store
        .set_email_preferences(caller.identity_id, &kinds, Utc::now())
        .await?;
    show(state, caller).await
}

/// The kinds an identity gets by email.
pub(crate) async fn email_kinds(
    state: &AppState,
    identity: IdentityId,
) -> NotifyResult<Vec<EventKind>> {
    Ok(state
        .store
        .email_preferences(identity)
        .await?
        .unwrap_or_else(|| EventKind::EMAIL_DEFAULTS.to_vec()))
}

/// Event kinds named in a request: known and subscribable, sorted, each
/// once. `field` names the list in errors.
pub(crate) fn parse_kinds(field: &str, names: &[String]) -> NotifyResult<Vec<EventKind>> {
    if names.len() > 64 {
        return Err(NotifyError::TooLarge(format!(
            "{field}: more than 64 entries"
        )));
    }
    let mut kinds = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let kind: EventKind = name
            .parse()
            .map_err(|e| NotifyError::Invalid(format!("{field}[{i}]: {e}")))?;
        if kind == EventKind::Ping {
            return Err(NotifyError::Invalid(format!(
                "{field}[{i}]: `ping` is sent by the test route only and cannot be subscribed to"
            )));
        }
        kinds.push(kind);
    }
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_checked_sorted_and_deduplicated() {
        let names = ["transfer.failed", "access.granted", "transfer.failed"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            parse_kinds("email", &names).unwrap(),
            vec![EventKind::TransferFailed, EventKind::AccessGranted]
        );
        let err = parse_kinds("events", &["transfer.failed".into(), "bogus".into()]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("events[1]: unknown event kind `bogus`"),
            "{err}"
        );
        assert!(parse_kinds("events", &["ping".into()]).is_err());
    }
}
