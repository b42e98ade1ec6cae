//! Pure Nix formats: no network I/O, no threads (`docs/protocols.md` §1–§6).

pub mod compression;
pub mod hash;
pub mod nar;
pub mod narinfo;
pub mod nix32;
pub mod path_info;
pub mod sig_cache;
pub mod signing;
pub mod store_path;
pub mod wire_str;
