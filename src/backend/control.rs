//! shardgate's own short connections to a backend, through tokio-postgres: for the questions it
//! asks the shards itself (columns, in-doubt transactions), never for client traffic.

use std::str::FromStr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

pub struct ControlConn {
    pub client: Client,
    task: JoinHandle<Result<(), tokio_postgres::Error>>,
}

/// Connects to `url` as `application_name` (what `pg_stat_activity` shows), giving up after
/// `timeout`. The error is tokio-postgres' own message.
pub async fn connect(
    url: &str,
    timeout: Duration,
    application_name: &str,
) -> Result<ControlConn, String> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string())?;
    config.connect_timeout(timeout);
    config.application_name(application_name);
    let (client, connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    Ok(ControlConn {
        client,
        task: tokio::spawn(connection),
    })
}

impl ControlConn {
    /// Closes the connection and waits until it is gone.
    pub async fn close(self) {
        drop(self.client);
        let _ = self.task.await;
    }
}

/// A tokio-postgres error with what the server said (severity, message, SQLSTATE) or the whole
/// chain of causes: its own `Display` says only "db error".
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
