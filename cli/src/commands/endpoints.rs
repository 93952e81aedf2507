//! `lattice endpoint list|show` (configure/start live with the agent).

use lattice_client::Client;
use lattice_protocol::compute::{BlockPhase, BlockReport, EndpointInfo, EndpointStatus};
use lattice_protocol::EndpointId;

/// Resolves an endpoint given by id or by name (among the caller's endpoints).
pub(crate) async fn resolve(client: &Client, given: &str) -> anyhow::Result<EndpointId> {
    if let Ok(id) = given.parse::<EndpointId>() {
        return Ok(id);
    }
    let endpoints = client.endpoints().await?;
    Ok(crate::output::one_named(
        "endpoint",
        given,
        &endpoints,
        |e| &e.name,
        |e| e.id,
    )?)
}

pub(crate) fn status_word(e: &EndpointInfo) -> &'static str {
    match e.status {
        EndpointStatus::Online => "online",
        EndpointStatus::Offline => "offline",
    }
}

pub(crate) fn describe(e: &EndpointInfo) -> String {
    let mut text = format!(
        "{}\n  name:          {}\n  status:        {}\n  workers:       {} ({})\n  waiting tasks: {}\n  agent queue:   {}",
        e.id,
        e.name,
        status_word(e),
        e.workers,
        count(e.idle_slots, "idle slot"),
        e.waiting_tasks,
        e.agent_queue_depth
    );
    if let Some(host) = &e.hostname {
        text.push_str(&format!("\n  host:          {host}"));
    }
    if let Some(provider) = &e.provider {
        text.push_str(&format!("\n  provider:      {provider} (worker blocks)"));
    }
    if let Some(version) = &e.agent_version {
        text.push_str(&format!("\n  agent version: {version}"));
    }
    if let Some(seen) = &e.last_seen {
        text.push_str(&format!("\n  last seen:     {}", seen.to_rfc3339()));
    }
    // Blocks that ended normally (cancelled by scaling in, or completed)
    // are history: counted, not listed. Failed ones stay, with why.
    let ended = |b: &&BlockReport| matches!(b.state, BlockPhase::Cancelled | BlockPhase::Completed);
    let shown: Vec<&BlockReport> = e.blocks.iter().filter(|b| !ended(b)).collect();
    let finished = e.blocks.len() - shown.len();
    if !e.blocks.is_empty() {
        text.push_str("\n  blocks:");
        if shown.is_empty() {
            text.push_str(" none running");
        }
        if finished > 0 {
            text.push_str(&format!(" ({} ended)", count(finished as u64, "block")));
        }
        for block in shown {
            text.push_str(&format!(
                "\n    {}  {:<9}  job {}  {}, {}",
                block.id,
                format!("{:?}", block.state).to_lowercase(),
                block.job_id.as_deref().unwrap_or("-"),
                count(block.nodes, "node"),
                count(block.workers, "worker")
            ));
            if let Some(message) = &block.message {
                text.push_str(&format!("\n      {message}"));
            }
        }
    }
    if e.multi_user {
        text.push_str(
            "\n  mode:          multi-user (tasks run as their submitters' local accounts)",
        );
        if e.children.is_empty() {
            text.push_str("\n  user agents:   none running");
        } else {
            text.push_str("\n  user agents:");
        }
        for child in &e.children {
            text.push_str(&format!(
                "\n    {}  pid {}  {}, {}  variables {}",
                child.local_user,
                child.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                count(child.tasks, "task"),
                count(child.workers, "worker"),
                child.variables
            ));
            for block in &child.blocks {
                text.push_str(&format!(
                    "\n      block {}  {:<9}  job {}  {}, {}",
                    block.id,
                    format!("{:?}", block.state).to_lowercase(),
                    block.job_id.as_deref().unwrap_or("-"),
                    count(block.nodes, "node"),
                    count(block.workers, "worker")
                ));
            }
            if let Some(error) = &child.provider_error {
                text.push_str(&format!("\n      cannot start workers: {error}"));
            }
        }
    }
    if let Some(error) = &e.provider_error {
        text.push_str(&format!(
            "\n\nThe endpoint cannot start workers: {error}\nTasks wait until it can; fix the endpoint's [provider] config and restart it."
        ));
    }
    if e.status == EndpointStatus::Offline && e.waiting_tasks > 0 {
        text.push_str(&format!(
            "\n\nThe endpoint is offline: {} tasks are queued and will run when its agent reconnects.",
            e.waiting_tasks
        ));
    }
    text
}

/// `1 worker`, `2 workers`.
pub(crate) fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

pub(crate) fn table(list: &[EndpointInfo]) -> String {
    if list.is_empty() {
        return "no endpoints (start one with `lattice agent --name NAME` or `lattice dev`)".into();
    }
    list.iter()
        .map(|e| {
            format!(
                "{}  {:<7}  {:>11}  {:>6} waiting  {}",
                e.id,
                status_word(e),
                count(e.workers, "worker"),
                e.waiting_tasks,
                e.name
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_protocol::compute::{BlockPhase, BlockReport, ChildReport};

    fn endpoint() -> EndpointInfo {
        serde_json::from_value(serde_json::json!({
            "id": lattice_protocol::EndpointId::new(),
            "name": "facility",
            "owner_id": lattice_protocol::IdentityId::new(),
            "status": "online",
            "created_at": "2026-11-23T12:00:00Z",
            "last_seen": null,
            "agent_version": null,
            "hostname": null,
            "workers": 1,
            "idle_slots": 0,
            "agent_queue_depth": 0,
            "waiting_tasks": 0
        }))
        .expect("an endpoint")
    }

    #[test]
    fn a_plain_endpoint_says_nothing_of_user_agents() {
        let text = describe(&endpoint());
        assert!(!text.contains("multi-user"), "{text}");
        assert!(!text.contains("user agents"), "{text}");
    }

    #[test]
    fn ended_blocks_are_counted_not_listed() {
        let block = |id: &str, state| BlockReport {
            id: id.into(),
            job_id: None,
            state,
            message: None,
            nodes: 1,
            workers: 0,
        };
        let mut e = endpoint();
        e.provider = Some("slurm".into());
        e.blocks = vec![
            block("b-old-1", BlockPhase::Cancelled),
            block("b-new", BlockPhase::Running),
            block("b-old-2", BlockPhase::Completed),
            block("b-bad", BlockPhase::Failed),
        ];
        let text = describe(&e);
        assert!(text.contains("provider:      slurm"), "{text}");
        assert!(text.contains("blocks: (2 blocks ended)"), "{text}");
        assert!(text.contains("b-new") && text.contains("b-bad"), "{text}");
        assert!(!text.contains("b-old"), "{text}");
        e.blocks.retain(|b| b.id.starts_with("b-old"));
        assert!(describe(&e).contains("blocks: none running (2 blocks ended)"));
    }

    #[test]
    fn a_multi_user_endpoint_lists_its_user_agents_and_their_blocks() {
        let mut e = endpoint();
        e.multi_user = true;
        assert!(describe(&e).contains("user agents:   none running"));
        e.children = vec![ChildReport {
            local_user: "lattice-alice".into(),
            variables: r#"{"walltime":600}"#.into(),
            pid: Some(4242),
            tasks: 3,
            workers: 1,
            blocks: vec![BlockReport {
                id: "b1-1".into(),
                job_id: Some("17".into()),
                state: BlockPhase::Running,
                message: None,
                nodes: 1,
                workers: 1,
            }],
            provider_error: Some("sbatch: error: invalid partition".into()),
        }];
        let text = describe(&e);
        assert!(text.contains("mode:          multi-user"), "{text}");
        assert!(
            text.contains(
                "lattice-alice  pid 4242  3 tasks, 1 worker  variables {\"walltime\":600}"
            ),
            "{text}"
        );
        assert!(text.contains("block b1-1  running    job 17"), "{text}");
        assert!(
            text.contains("cannot start workers: sbatch: error: invalid partition"),
            "{text}"
        );
    }
}
