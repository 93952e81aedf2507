//! `lattice function register|list|show|delete`.

use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use clap::{ArgGroup, Subcommand};
use lattice_protocol::compute::{FunctionInfo, FunctionRegister, FunctionSpec};
use lattice_protocol::FunctionId;

use lattice_client::Client;

use crate::context::Context;
use crate::output::UsageError;

#[derive(Subcommand, Debug)]
pub(crate) enum FunctionCommand {
    /// Register a function and print its id. Registering the same command
    /// under the same name again returns the existing id.
    #[command(group(ArgGroup::new("kind").required(true).args(["shell", "container", "wasm"])))]
    Register {
        /// A shell command template; `{name}` placeholders are filled with
        /// shell-quoted task arguments (`{{`/`}}` for literal braces).
        #[arg(long, value_name = "CMD")]
        shell: Option<String>,
        /// A container image (run with `--command`).
        #[arg(long, value_name = "IMAGE", requires = "command")]
        container: Option<String>,
        /// Command template for `--container`.
        #[arg(long, value_name = "CMD")]
        command: Option<String>,
        /// A WASI (preview 1) command module: its arguments are the task's
        /// `argv` array (or its argument values in key order), its stdin the
        /// task's `stdin` argument.
        #[arg(long, value_name = "FILE.wasm")]
        wasm: Option<PathBuf>,
        /// A name to recognise it by [default: the command's first word].
        #[arg(long)]
        name: Option<String>,
        /// A sentence on what the function does, shown by `function show`.
        #[arg(long)]
        description: Option<String>,
    },
    /// List your functions.
    List,
    /// Show one function.
    Show {
        /// Function id or name.
        function: String,
    },
    /// Delete a function: new tasks are refused, running ones finish.
    Delete {
        /// Function id or name.
        function: String,
    },
    #[command(flatten)]
    Grants(crate::commands::sharing::GrantCommand),
}

pub(crate) async fn run(ctx: &Context, command: FunctionCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        FunctionCommand::Register {
            shell,
            container,
            command,
            wasm,
            name,
            description,
        } => {
            // A module is named after its file unless told otherwise.
            let name = name.or_else(|| {
                let stem = wasm.as_deref()?.file_stem()?;
                Some(stem.to_string_lossy().into_owned())
            });
            let spec = match (shell, container, wasm) {
                (Some(command), None, None) => FunctionSpec::Shell { command },
                (None, Some(image), None) => FunctionSpec::Container {
                    image,
                    command: command.unwrap_or_default(),
                },
                (None, None, Some(path)) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading the Wasm module {}", path.display()))?;
                    FunctionSpec::Wasm {
                        module: base64::engine::general_purpose::STANDARD.encode(bytes),
                    }
                }
                _ => {
                    return Err(UsageError(
                        "give exactly one of --shell, --container, --wasm".into(),
                    )
                    .into())
                }
            };
            let function = client
                .register_function(&FunctionRegister {
                    name,
                    description,
                    spec,
                })
                .await?;
            ctx.output.emit(&function, |f| f.id.to_string())
        }
        FunctionCommand::List => {
            let functions = client.functions().await?;
            ctx.output.emit(&functions, |list| {
                if list.is_empty() {
                    return "no functions".into();
                }
                list.iter()
                    .map(|f| format!("{}  {:<9}  {}", f.id, f.kind, f.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        FunctionCommand::Show { function } => {
            let id = resolve(&client, &function).await?;
            let function = client.function(id).await?;
            ctx.output.emit(&function, describe)
        }
        FunctionCommand::Delete { function } => {
            let id = resolve(&client, &function).await?;
            client.delete_function(id).await?;
            eprintln!("Deleted function {id}.");
            Ok(())
        }
        FunctionCommand::Grants(command) => {
            crate::commands::sharing::grants(
                ctx,
                crate::commands::sharing::GrantTarget::Function,
                command,
            )
            .await
        }
    }
}

/// A function id, or the name of exactly one of the caller's functions.
pub(crate) async fn resolve(client: &Client, given: &str) -> anyhow::Result<FunctionId> {
    if let Ok(id) = given.parse::<FunctionId>() {
        return Ok(id);
    }
    let functions = client.functions().await?;
    Ok(crate::output::one_named(
        "function",
        given,
        &functions,
        |f| &f.name,
        |f| f.id,
    )?)
}

fn describe(f: &FunctionInfo) -> String {
    let what = match &f.spec {
        FunctionSpec::Shell { command } => format!("shell: {command}"),
        FunctionSpec::Container { image, command } => format!("container: {image} {command}"),
        FunctionSpec::Wasm { module } => format!("wasm module ({} base64 bytes)", module.len()),
        FunctionSpec::Python {
            python_version,
            entry_point,
            ..
        } => format!(
            "python {python_version}: {}",
            entry_point.as_deref().unwrap_or("<callable>")
        ),
    };
    format!(
        "{}\n  name:        {}\n  kind:        {}\n  runs:        {what}\n  parameters:  {}\n  hash:        {}\n  created:     {}",
        f.id,
        f.name,
        f.kind,
        if f.parameters.is_empty() { "(none)".into() } else { f.parameters.join(", ") },
        f.content_hash,
        f.created_at.to_rfc3339()
    )
}
