pub(crate) mod auth;
pub(crate) mod clients;
pub(crate) mod dev;
pub(crate) mod service;
