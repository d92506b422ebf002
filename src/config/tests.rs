//! Config loading and validation: the exact text an operator reads.

use super::*;
