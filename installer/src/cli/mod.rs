//! The binary's own rooms: the command line ([`args`]), the terminal ([`term`]: wizard
//! prompts, confirmations, progress) and how reports read as text ([`render`]).

pub mod args;
pub mod render;
pub mod term;
