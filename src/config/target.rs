//! Backend URLs (`primary`, `replicas`, `control`) parsed into the parts the pool needs.

use std::str::FromStr;

use tokio_postgres::config::Host;

use super::ShardConfig;

/// One Postgres server to connect to, as named by a `postgres://` URL in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTarget {
    /// An IP address or host name, or the directory of a unix socket (starts with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    /// The URL with any password replaced by `***`: safe to log and print.
    pub url_redacted: String,
}

/// Parses a backend URL. The error text never contains the URL (it may hold a password).
pub fn parse_backend_url(url: &str) -> Result<BackendTarget, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must be a postgres:// or postgresql:// URL".into());
    }
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|e| format!("not a valid Postgres URL: {e}"))?;
    let host = match config.get_hosts() {
        [] => return Err("the URL names no host".into()),
        [Host::Tcp(name)] if name.is_empty() => return Err("the URL names no host".into()),
        [Host::Tcp(name)] => name.clone(),
        #[cfg(unix)]
        [Host::Unix(dir)] => dir.display().to_string(),
        _ => return Err("the URL names more than one host; give one server per URL".into()),
    };
    let port = match config.get_ports() {
        [] => 5432,
        [port] => *port,
        _ => return Err("the URL names more than one port; give one server per URL".into()),
    };
    let user = match config.get_user() {
        Some(user) if !user.is_empty() => user.to_string(),
        _ => {
            return Err(
                "the URL names no user (postgres://USER:PASSWORD@HOST:PORT/DATABASE)".into(),
            )
        }
    };
    let password = match config.get_password() {
        Some(bytes) => {
            Some(String::from_utf8(bytes.to_vec()).map_err(|_| "the URL's password is not UTF-8")?)
        }
        None => None,
    };
    let database = match config.get_dbname() {
        Some(db) if !db.is_empty() => db.to_string(),
        _ => {
            return Err(
                "the URL names no database (postgres://USER:PASSWORD@HOST:PORT/DATABASE)".into(),
            )
        }
    };
    let url_redacted = redact_url(url);
    Ok(BackendTarget {
        host,
        port,
        user,
        password,
        database,
        url_redacted,
    })
}

/// Replaces the password of `scheme://user:password@host/...` and any `password=` parameter by
/// `***`. Works on the text, so it also redacts URLs that do not parse.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://");
    match before_query.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str(&format!("{userinfo}@")),
            }
            out.push_str(hosts);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some(("password", _)) => "password=***".to_string(),
                _ => param.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

impl ShardConfig {
    /// The primary server.
    ///
    /// # Panics
    /// If the URL does not parse, which [`super::Config::parse`] has already ruled out.
    pub fn primary_target(&self) -> BackendTarget {
        parse_backend_url(&self.primary).expect("shard URLs are checked by Config::parse")
    }

    /// The replicas, in config order.
    ///
    /// # Panics
    /// If a URL does not parse, which [`super::Config::parse`] has already ruled out.
    pub fn replica_targets(&self) -> Vec<BackendTarget> {
        let parse =
            |url: &String| parse_backend_url(url).expect("shard URLs are checked by Config::parse");
        self.replicas.iter().map(parse).collect()
    }
}
