//! Arbitrary text (lossily decoded) through the statement splitter and the classifier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate::session::sql::{classify, statements, strip_comments_start};

fuzz_target!(|data: &[u8]| {
    let sql = String::from_utf8_lossy(data);
    let range = sql.as_ptr() as usize..sql.as_ptr() as usize + sql.len();
    for stmt in statements(&sql) {
        // Each statement borrows from the input: a real substring, not a copy.
        let start = stmt.as_ptr() as usize;
        assert!(
            range.contains(&start) || (stmt.is_empty() && start == range.end),
            "statement {stmt:?} is not part of the input"
        );
        assert!(start + stmt.len() <= range.end);
        assert!(sql.contains(stmt));
        // Empty statements (only whitespace and comments) are dropped.
        assert!(
            !strip_comments_start(stmt).is_empty(),
            "empty statement {stmt:?} kept"
        );
        let _ = classify(stmt);
    }
    // The classifier must take any text, not only what the splitter produces.
    let _ = classify(&sql);
});
