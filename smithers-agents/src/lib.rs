//! Agents of smithers-rs.
