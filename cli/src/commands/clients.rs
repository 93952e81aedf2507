//! `lattice client create|list|delete|rotate-secret`: client applications
//! for automation.

use clap::Subcommand;
use lattice_protocol::api::{ClientCreateRequest, ClientCreated, Scope};
use lattice_protocol::ClientId;
use serde::Serialize;

use crate::context::Context;
use crate::output::id_of;

/// What `client create` and `rotate-secret` print in JSON: `id` like every
/// command that creates something, and the client with its secret.
#[derive(Serialize)]
struct WithSecret {
    id: ClientId,
    #[serde(flatten)]
    created: ClientCreated,
}

/// Until endpoints and collections can be shared, a client's identity owns
/// nothing of its creator's.
const OWNS_NOTHING_YET: &str =
    "The client is an identity of its own: it can use what it creates (functions, \
endpoints it registers), not your endpoints or collections. Sharing them with it \
comes with groups and sharing; until then run its work on an endpoint it registers \
itself (`lattice agent` with the client's token).";

#[derive(Subcommand, Debug)]
pub(crate) enum ClientCommand {
    /// Register a client application; prints its id and secret (shown once).
    /// Use them with `POST /v1/auth/token` and `grant_type=client_credentials`.
    Create {
        /// A name to recognise the client by.
        name: String,
        /// Scope the client may request (repeatable) [default: your token's scopes].
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
    },
    /// List the client applications you own.
    List,
    /// Delete a client: its secret stops working and every token issued to
    /// it is revoked at once.
    Delete {
        /// Client id (`lattice client list`).
        #[arg(value_parser = id_of::<ClientId>("client", "`lattice client list`"))]
        id: ClientId,
    },
    /// Give a client a new secret (shown once): the old secret stops working
    /// and every token issued to the client is revoked.
    RotateSecret {
        /// Client id (`lattice client list`).
        #[arg(value_parser = id_of::<ClientId>("client", "`lattice client list`"))]
        id: ClientId,
    },
}

fn describe_secret(c: &WithSecret) -> String {
    format!(
        "client id:     {}\nclient secret: {}\nscopes:        {}\n\nThe secret is shown only now; store it safely.\n{OWNS_NOTHING_YET}",
        c.id,
        c.created.client_secret,
        Scope::join(&c.created.client.scopes)
    )
}

pub(crate) async fn run(ctx: &Context, command: ClientCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        ClientCommand::Create { name, scopes } => {
            let scopes = if scopes.is_empty() {
                None
            } else {
                Some(
                    scopes
                        .iter()
                        .map(|s| s.parse::<Scope>())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| crate::output::UsageError(e.to_string()))?,
                )
            };
            let created = client
                .create_client(&ClientCreateRequest { name, scopes })
                .await?;
            let created = WithSecret {
                id: created.client.client_id,
                created,
            };
            ctx.output.emit(&created, describe_secret)
        }
        ClientCommand::List => {
            let clients = client.list_clients().await?;
            ctx.output.emit(&clients, |clients| {
                if clients.is_empty() {
                    return "no clients".into();
                }
                clients
                    .iter()
                    .map(|c| format!("{}  {}  [{}]", c.client_id, c.name, Scope::join(&c.scopes)))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        ClientCommand::Delete { id } => {
            client.delete_client(id).await?;
            eprintln!("Deleted client {id}; its tokens are revoked.");
            Ok(())
        }
        ClientCommand::RotateSecret { id } => {
            let created = client.rotate_client_secret(id).await?;
            let created = WithSecret { id, created };
            ctx.output.emit(&created, describe_secret)
        }
    }
}
