//! Timers: create, list, show, rename, pause, resume, delete, and the
//! record of each timer's ticks.

use lattice_protocol::timers::{
    TimerCreate, TimerInfo, TimerList, TimerRunList, TimerStatus, TimerUpdate,
};
use lattice_protocol::TimerId;
use reqwest::Method;

use crate::{Client, ClientResult};

impl Client {
    pub async fn create_timer(&self, request: &TimerCreate) -> ClientResult<TimerInfo> {
        self.post("v1/timers", request).await
    }

    /// The caller's timers with one of `statuses` (empty: all but deleted)
    /// whose name contains `name`.
    pub async fn timers(
        &self,
        statuses: &[TimerStatus],
        name: Option<&str>,
    ) -> ClientResult<TimerList> {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        if !statuses.is_empty() {
            let list: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            pairs.append_pair("status", &list.join(","));
        }
        if let Some(name) = name {
            pairs.append_pair("name", name);
        }
        let query = pairs.finish();
        if query.is_empty() {
            self.get("v1/timers").await
        } else {
            self.get(&format!("v1/timers?{query}")).await
        }
    }

    pub async fn timer(&self, id: TimerId) -> ClientResult<TimerInfo> {
        self.get(&format!("v1/timers/{id}")).await
    }

    pub async fn update_timer(&self, id: TimerId, update: &TimerUpdate) -> ClientResult<TimerInfo> {
        self.request(Method::PATCH, &format!("v1/timers/{id}"), Some(update))
            .await
    }

    pub async fn pause_timer(&self, id: TimerId) -> ClientResult<TimerInfo> {
        self.request::<(), _>(Method::POST, &format!("v1/timers/{id}/pause"), None)
            .await
    }

    pub async fn resume_timer(&self, id: TimerId) -> ClientResult<TimerInfo> {
        self.request::<(), _>(Method::POST, &format!("v1/timers/{id}/resume"), None)
            .await
    }

    pub async fn delete_timer(&self, id: TimerId) -> ClientResult<TimerInfo> {
        self.request::<(), _>(Method::DELETE, &format!("v1/timers/{id}"), None)
            .await
    }

    /// One page of a timer's ticks, newest first (`before`: the previous
    /// page's `next_before`).
    pub async fn timer_runs(
        &self,
        id: TimerId,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> ClientResult<TimerRunList> {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        if let Some(before) = before {
            pairs.append_pair("before", &before.to_string());
        }
        if let Some(limit) = limit {
            pairs.append_pair("limit", &limit.to_string());
        }
        let query = pairs.finish();
        if query.is_empty() {
            self.get(&format!("v1/timers/{id}/runs")).await
        } else {
            self.get(&format!("v1/timers/{id}/runs?{query}")).await
        }
    }
}
