//! The crate's error types and the closed set of fault codes transfers report.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What went wrong with a collection path or file operation.
#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    /// The path was refused before touching the file system (`..`, NUL, ...).
    #[error("path `{path}` is not allowed: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// Resolution left the collection root (a symlink pointing outside, possibly
    /// swapped in while the operation ran).
    #[error("path `{path}` leads outside the collection (through a symlink): refused")]
    Escape { path: String },
    #[error("`{path}` does not exist in the collection")]
    NotFound { path: String },
    #[error("permission denied on `{path}`")]
    PermissionDenied { path: String },
    #[error("`{path}` already exists")]
    AlreadyExists { path: String },
    #[error("`{path}` is a directory that is not empty: delete it recursively")]
    DirectoryNotEmpty { path: String },
    #[error("`{path}` is a directory")]
    IsADirectory { path: String },
    #[error("`{path}` is not a directory")]
    NotADirectory { path: String },
    #[error("no space left on the device holding `{path}`")]
    NoSpace { path: String },
    /// A [`crate::DeleteControl`] stopped the delete.
    #[error("the delete was stopped before it finished")]
    Stopped,
    #[error("refusing to {op} the collection root")]
    RootOperation { op: &'static str },
    #[error("collection root `{root}` cannot be opened: {source}")]
    Root { root: PathBuf, source: io::Error },
    #[error("{op} `{path}`: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: io::Error,
    },
}

impl CollectionError {
    /// Classifies an I/O error from an operation on `path`.
    ///
    /// cap-std reports an escape attempt as `PermissionDenied` without an OS
    /// error number; a real `EACCES` always carries one.
    pub(crate) fn from_io(op: &'static str, path: impl Into<String>, err: io::Error) -> Self {
        let path = path.into();
        if err.kind() == io::ErrorKind::PermissionDenied && err.raw_os_error().is_none() {
            return CollectionError::Escape { path };
        }
        match err.raw_os_error() {
            Some(libc::ENOENT) => return CollectionError::NotFound { path },
            Some(libc::EACCES) | Some(libc::EPERM) => {
                return CollectionError::PermissionDenied { path }
            }
            Some(libc::EEXIST) => return CollectionError::AlreadyExists { path },
            Some(libc::ENOTEMPTY) => return CollectionError::DirectoryNotEmpty { path },
            Some(libc::EISDIR) => return CollectionError::IsADirectory { path },
            Some(libc::ENOTDIR) => return CollectionError::NotADirectory { path },
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => return CollectionError::NoSpace { path },
            // RESOLVE_BENEATH / RESOLVE_NO_SYMLINKS style refusals.
            Some(libc::EXDEV) => return CollectionError::Escape { path },
            _ => {}
        }
        match err.kind() {
            io::ErrorKind::NotFound => CollectionError::NotFound { path },
            io::ErrorKind::PermissionDenied => CollectionError::PermissionDenied { path },
            io::ErrorKind::AlreadyExists => CollectionError::AlreadyExists { path },
            _ => CollectionError::Io {
                op,
                path,
                source: err,
            },
        }
    }

    /// The transfer fault code this error maps to.
    pub fn fault_code(&self) -> FaultCode {
        match self {
            CollectionError::NotFound { .. } => FaultCode::FileNotFound,
            CollectionError::PermissionDenied { .. } | CollectionError::Escape { .. } => {
                FaultCode::PermissionDenied
            }
            CollectionError::NoSpace { .. } => FaultCode::NoSpaceLeft,
            CollectionError::InvalidPath { .. } | CollectionError::RootOperation { .. } => {
                FaultCode::InvalidPath
            }
            CollectionError::Stopped => FaultCode::Cancelled,
            _ => FaultCode::IoError,
        }
    }
}

/// The fault codes: protocol's, shared with the service and the agent.
pub use lattice_protocol::transfer::FaultCode;

/// Why a transfer attempt (one `run_source` / `run_destination` call) failed.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize, PartialEq)]
#[error("{code}: {message}")]
pub struct TransferError {
    pub code: FaultCode,
    pub message: String,
    /// Whether the orchestrator should try again (with backoff) rather than
    /// fail the task: connection faults and, without `fail_on_quota`, a full disk.
    pub retryable: bool,
}

impl TransferError {
    pub fn new(code: FaultCode, message: impl Into<String>) -> Self {
        let retryable = matches!(
            code,
            FaultCode::ConnectFailed
                | FaultCode::ConnectionReset
                | FaultCode::VerifyChecksum
                | FaultCode::FileSizeChanged
                | FaultCode::NoSpaceLeft
                | FaultCode::IoError
        );
        TransferError {
            code,
            message: message.into(),
            retryable,
        }
    }

    pub(crate) fn fatal(code: FaultCode, message: impl Into<String>) -> Self {
        TransferError {
            code,
            message: message.into(),
            retryable: false,
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Self::fatal(FaultCode::ProtocolError, message)
    }

    pub(crate) fn from_collection(err: &CollectionError) -> Self {
        Self::new(err.fault_code(), err.to_string())
    }
}

/// A failed attempt: the error plus everything the attempt did before it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct TransferFailure {
    pub error: TransferError,
    pub report: Box<crate::TransferReport>,
}

/// Setting up a transfer endpoint (certificates, sockets) failed.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("generating the agent certificate: {0}")]
    Certificate(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("binding the transfer endpoint to {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("{op} `{path}`: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}
