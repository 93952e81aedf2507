//! Notifications: the caller's email preferences and webhooks with their
//! delivery logs.

use lattice_protocol::notify::{
    DeliveryInfo, DeliveryList, NotifyPreferences, PreferencesUpdate, WebhookCreate, WebhookInfo,
    WebhookList,
};
use lattice_protocol::WebhookId;
use reqwest::Method;

use crate::{Client, ClientResult};

impl Client {
    /// The event kinds sent to the caller by email, and whether the
    /// service sends email at all.
    pub async fn notify_preferences(&self) -> ClientResult<NotifyPreferences> {
        self.get("v1/notifications/preferences").await
    }

    /// Replaces the event kinds sent to the caller by email.
    pub async fn set_notify_preferences(
        &self,
        update: &PreferencesUpdate,
    ) -> ClientResult<NotifyPreferences> {
        self.request(Method::PUT, "v1/notifications/preferences", Some(update))
            .await
    }

    /// Creates a webhook; the answer's `secret` is shown this once.
    pub async fn create_webhook(&self, request: &WebhookCreate) -> ClientResult<WebhookInfo> {
        self.post("v1/webhooks", request).await
    }

    pub async fn webhooks(&self) -> ClientResult<WebhookList> {
        self.get("v1/webhooks").await
    }

    pub async fn webhook(&self, id: WebhookId) -> ClientResult<WebhookInfo> {
        self.get(&format!("v1/webhooks/{id}")).await
    }

    pub async fn delete_webhook(&self, id: WebhookId) -> ClientResult<()> {
        self.request::<(), _>(Method::DELETE, &format!("v1/webhooks/{id}"), None)
            .await
    }

    /// The newest deliveries with their attempts.
    pub async fn webhook_deliveries(&self, id: WebhookId) -> ClientResult<DeliveryList> {
        self.get(&format!("v1/webhooks/{id}/deliveries")).await
    }

    /// Queues a `ping` event to the webhook.
    pub async fn test_webhook(&self, id: WebhookId) -> ClientResult<DeliveryInfo> {
        self.request::<(), _>(Method::POST, &format!("v1/webhooks/{id}/test"), None)
            .await
    }
}
