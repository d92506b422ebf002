//! Router tests: plans and targets for every statement shape DESIGN §2.4 names, the bugs found
//! while writing them, property tests of placement, and the SQL corpus.

mod support;

mod columns;
mod copy;
mod corpus;
mod fallback;
mod holds;
mod joins;
mod keys;
mod merge;
mod placement;
mod scope;
mod writes;
