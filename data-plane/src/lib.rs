//! Storage and data movement: collections confined to a root, file
//! operations, the QUIC transfer engine, checksums and restart markers (as the
//! data-plane issue lands).
//!
//! It must not know about the service's store or about compute; the agent
//! hosts it and the service only orchestrates it through `protocol` frames.
