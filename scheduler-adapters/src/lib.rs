//! Providers that start worker pools ("blocks"): local processes now; Slurm,
//! PBS, LSF and Kubernetes as the scheduler issue lands; and the strategy that
//! scales blocks between `min_blocks` and `max_blocks`.
//!
//! It owns talking to a batch scheduler through its real commands or API. It
//! must not know about tasks, functions or the service: it is told how many
//! blocks to run and reports their states.
