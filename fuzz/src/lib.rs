//! Helpers shared by the fuzz targets: an independent NAR parser and a
//! directory-tree generator (`nar_tree`), and a scripted daemon peer
//! (`daemon_wire`). Written for the fuzz crate from `docs/protocols.md` §3 and
//! §7, not from the code under test, so that the two can disagree.

pub mod nar;
pub mod peer;
pub mod tree;
