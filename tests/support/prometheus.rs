//! A real Prometheus (Debian's, unpacked by `scripts/setup/30-prometheus.sh`) for tests:
//! started on a free loopback port with its own temp TSDB, queried through its HTTP API.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use super::http::try_get;

/// The Prometheus binary from `OZ_TEST_PROMETHEUS_BIN` (or `OZ_TEST_PROMTOOL_BIN` etc.), when
/// it exists.
pub(crate) fn binary(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .filter(|path| std::path::Path::new(path).is_file())
}

/// A real Prometheus scraping one target every second, on a free loopback port.
pub(crate) struct PrometheusServer {
    addr: SocketAddr,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus from `binary` scraping `target`.
    pub(crate) async fn start(binary: &str, target: SocketAddr) -> PrometheusServer {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
             scrape_configs: [{{job_name: worker, static_configs: [{{targets: [\"{target}\"]}}]}}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = tokio::process::Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        PrometheusServer {
            addr,
            _child: child,
            _dir: dir,
        }
    }

    /// Runs an instant query; the `result` array, once Prometheus answers.
    pub(crate) async fn query(&self, promql: &str) -> Option<Vec<serde_json::Value>> {
        let encoded: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let (status, body) = try_get(self.addr, &format!("/api/v1/query?query={encoded}")).await?;
        if status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"].as_array().cloned()
    }

    /// Polls `promql` (bounded) until its single result's value is `want`.
    pub(crate) async fn wait_for_value(&self, promql: &str, want: f64) -> serde_json::Value {
        let last = std::sync::Mutex::new(None);
        let found = crate::support::poll_some(Duration::from_secs(60), || async {
            let result = self.query(promql).await?;
            if let [sample] = result.as_slice()
                && sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    == Some(want)
            {
                return Some(sample.clone());
            }
            *last.lock().unwrap() = Some(result);
            None
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "{promql} never became {want}; last result: {:?}; log: {}",
                last.lock().unwrap(),
                std::fs::read_to_string(self._dir.path().join("prometheus.log"))
                    .unwrap_or_default()
            )
        })
    }
}
