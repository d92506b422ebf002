//! `${VAR}` expansion on parsed string scalars.
//!
//! Expansion happens after YAML parsing, on the string values themselves, so whatever a variable
//! holds (`:`, `#`, quotes, newlines) arrives verbatim and cannot change the document's shape.
//! Rules: `${NAME}` with `NAME` = `[A-Za-z_][A-Za-z0-9_]*` is replaced by the variable's value (an
//! unset variable is an error); `$${` is a literal `${`; any other `$` is literal (SCRAM verifiers
//! contain `$`). Expanded text is not expanded again. Keys are never expanded, only values.

use super::tree::{child_path, index_path, Node, Value};
use super::ConfigIssue;

/// Where variables come from: the process environment in production, a closure in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expands every string value in the tree, collecting one issue per problem.
pub(crate) fn expand_tree(
    node: &mut Node,
    path: &str,
    env: Env<'_>,
    issues: &mut Vec<ConfigIssue>,
) {
    let (line, column) = (node.line, node.column);
    match &mut node.value {
        Value::Str(text) => match expand(text, env) {
            Ok(expanded) => *text = expanded,
            Err(problem) => issues.push(ConfigIssue::new(path, problem).at(line, column)),
        },
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &index_path(path, i), env, issues);
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                expand_tree(value, &child_path(path, &key.key_text()), env, issues);
            }
        }
        _ => {}
    }
}

/// Expands one string. The error names the first variable that is unset or malformed.
pub(crate) fn expand(text: &str, env: Env<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| "`${` without a closing `}`".to_string())?;
            let name = &body[..end];
            if !is_var_name(name) {
                return Err(format!(
                    "`${{{name}}}` is not a valid variable reference (use `${{NAME}}`, or `$${{` for a literal `${{`)"
                ));
            }
            let value =
                env(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}
