//! End-to-end tests: the service on a real socket with real peers (an OpenID
//! Connect provider, later agents and the CLI). The harness is `lattice_tests`.

mod blocks;
mod data;
mod login;
mod multi_user;
mod sharing;
