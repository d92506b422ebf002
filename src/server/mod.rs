//! See lib.rs.

pub mod auth;
