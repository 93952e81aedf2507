//! Typed ids: a task id can never be passed where an endpoint id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random (v4) id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A person, a client application or an agent known to the service.
    IdentityId
);
id_type!(
    /// An access or refresh token (not the secret itself).
    TokenId
);
id_type!(
    /// A client application registered for client-credentials login.
    ClientId
);
id_type!(
    /// A pending federated login started by `lattice login`.
    LoginId
);

id_type!(
    /// A registered function (immutable once registered).
    FunctionId
);
id_type!(
    /// An endpoint: where an agent runs functions.
    EndpointId
);
id_type!(
    /// One function invocation.
    TaskId
);
id_type!(
    /// A group of tasks submitted together; results stream per batch.
    BatchId
);
id_type!(
    /// One worker process connected to an agent's dispatcher.
    WorkerId
);
id_type!(
    /// A mapped collection: a root directory hosted by an endpoint's agent.
    CollectionId
);
id_type!(
    /// A managed transfer task between two collections.
    TransferId
);
id_type!(
    /// A group of identities (and, through subgroups, of other groups).
    GroupId
);
id_type!(
    /// An access rule of a collection.
    AclRuleId
);
id_type!(
    /// A role granted on a collection.
    RoleId
);
id_type!(
    /// A search index.
    SearchIndexId
);
id_type!(
    /// An asynchronous ingest, delete or crawl task of a search index.
    SearchTaskId
);

id_type!(
    /// A flow: a stored definition that runs can be started from.
    FlowId
);
id_type!(
    /// One run of a flow.
    FlowRunId
);
id_type!(
    /// One action started at an action provider the service hosts.
    ActionId
);
id_type!(
    /// A timer: starts a transfer, a task batch or a flow run on a schedule.
    TimerId
);
id_type!(
    /// A webhook: a URL that receives signed notification events.
    WebhookId
);
id_type!(
    /// One event's delivery to one webhook (retried until it succeeds or gives up).
    DeliveryId
);
id_type!(
    /// One notification event (the same id on every webhook it goes to).
    EventId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_json_and_text() {
        let id = IdentityId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        let back: IdentityId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert_eq!(id.to_string().parse::<IdentityId>().unwrap(), id);
        assert!("not-a-uuid".parse::<IdentityId>().is_err());
    }
}
