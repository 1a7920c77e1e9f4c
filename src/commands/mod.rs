//! The subcommands' bodies. `main.rs` only parses the command line and maps errors to exit
//! codes; each subcommand lives in its own module here.

mod access;
pub mod audit;
pub mod check_id;
pub mod demo_data;
pub mod keys;
pub mod relay;
pub mod serve;
pub mod snapshot;
