//! Queries, scrolls and subject lookups: anyone, even anonymous, may read
//! an open index; the engine sees only the caller's principals (`public`;
//! with a token also `all_authenticated_users`, each linked identity and
//! each effective group, resolved now, so a removed member stops seeing
//! group entries at once). Index admins and owners may ask to bypass
//! visibility; writers and up see each entry's `visible_to`.

use lattice_protocol::search::{
    IndexRoleName, ScrollRequest, ScrollResult, SearchRequest, SearchResult as Found,
    SubjectResult, MAX_PAGE_SIZE, MAX_RESULT_WINDOW,
};
use lattice_protocol::SearchIndexId;
use lattice_search::Visibility;

use super::indexes::{self, Known};
use super::{Asker, RateKind, SearchHub, SearchResult, SearchServiceError};
use crate::store::SharedStore;

/// The index, open, and the visibility the caller reads it with.
async fn prepare(
    store: &SharedStore,
    hub: &SearchHub,
    asker: &Asker,
    index: SearchIndexId,
    bypass: bool,
) -> SearchResult<(Known, Visibility)> {
    if let Some(identity) = asker.identity {
        hub.rate.check(RateKind::Query, identity)?;
    }
    let known = indexes::load(store, asker, index).await?;
    if known.record.status != lattice_protocol::search::IndexStatus::Open {
        return Err(SearchServiceError::NotFound(format!(
            "search index {index} is deleted"
        )));
    }
    let visibility = if bypass {
        known.require(IndexRoleName::Admin, "bypass visibility")?;
        Visibility::Bypass
    } else {
        Visibility::Principals(asker.principals())
    };
    Ok((known, visibility))
}

fn check_page(offset: usize, limit: Option<usize>) -> SearchResult<()> {
    let limit = limit.unwrap_or(10);
    if limit > MAX_PAGE_SIZE {
        return Err(SearchServiceError::invalid(format!(
            "limit {limit} is over the largest page, {MAX_PAGE_SIZE}"
        )));
    }
    if offset.saturating_add(limit) > MAX_RESULT_WINDOW {
        return Err(SearchServiceError::invalid(format!(
            "offset + limit is {}, past the result window of {MAX_RESULT_WINDOW}; use the scroll (`POST .../scroll`, `lattice search query --all`) to read further",
            offset.saturating_add(limit)
        )));
    }
    Ok(())
}

/// Hides `visible_to` from callers below writer.
fn strip_visible_to(gmeta: &mut [SubjectResult], role: Option<IndexRoleName>) {
    if role.is_some_and(|r| r >= IndexRoleName::Writer) {
        return;
    }
    for subject in gmeta {
        for entry in &mut subject.entries {
            entry.visible_to = None;
        }
    }
}

pub async fn search(
    store: &SharedStore,
    hub: &SearchHub,
    asker: &Asker,
    index: SearchIndexId,
    request: SearchRequest,
) -> SearchResult<Found> {
    check_page(request.offset, request.limit)?;
    let (known, visibility) = prepare(store, hub, asker, index, request.bypass_visibility).await?;
    let mut found = hub.engine()?.search(index, &request, &visibility).await?;
    strip_visible_to(&mut found.gmeta, known.role);
    Ok(found)
}

pub async fn scroll(
    store: &SharedStore,
    hub: &SearchHub,
    asker: &Asker,
    index: SearchIndexId,
    request: ScrollRequest,
) -> SearchResult<ScrollResult> {
    let limit = request.limit.unwrap_or(10);
    if limit > MAX_PAGE_SIZE {
        return Err(SearchServiceError::invalid(format!(
            "limit {limit} is over the largest page, {MAX_PAGE_SIZE}"
        )));
    }
    let (known, visibility) = prepare(store, hub, asker, index, request.bypass_visibility).await?;
    let mut page = hub.engine()?.scroll(index, &request, &visibility).await?;
    strip_visible_to(&mut page.gmeta, known.role);
    Ok(page)
}

/// Every visible entry of one subject; 404 when none is visible.
pub async fn subject(
    store: &SharedStore,
    hub: &SearchHub,
    asker: &Asker,
    index: SearchIndexId,
    subject: &str,
    bypass: bool,
) -> SearchResult<SubjectResult> {
    let (known, visibility) = prepare(store, hub, asker, index, bypass).await?;
    let found = hub
        .engine()?
        .subject(index, subject, &visibility)
        .await?
        .ok_or_else(|| {
            SearchServiceError::NotFound(format!(
                "search index {index} has no entry of subject `{subject}` that you may see"
            ))
        })?;
    let mut found = [found];
    strip_visible_to(&mut found, known.role);
    let [found] = found;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_stay_inside_the_window() {
        assert!(check_page(0, None).is_ok());
        assert!(check_page(9_000, Some(1_000)).is_ok());
        assert!(check_page(9_001, Some(1_000)).is_err());
        let err = check_page(0, Some(1_000_000)).unwrap_err();
        assert!(err.to_string().contains("largest page"), "{err}");
    }
}
