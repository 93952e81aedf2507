//! `lattice client create|list`: client applications for automation.

use clap::Subcommand;
use lattice_protocol::api::{ClientCreateRequest, Scope};

use crate::context::Context;

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
            ctx.output.emit(&created, |c| {
                format!(
                    "client id:     {}\nclient secret: {}\nscopes:        {}\n\nThe secret is shown only now; store it safely.",
                    c.client.client_id,
                    c.client_secret,
                    Scope::join(&c.client.scopes)
                )
            })
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
    }
}
